// Package logkey holds the slog attribute keys every meshguard package uses,
// so that one field has one name across all logs.
package logkey

// Attribute keys. Audit records use the names of DESIGN.md (source_id,
// destination_id, ...) and are defined by the authz package's audit schema.
const (
	Component  = "component"
	Error      = "error"
	SPIFFEID   = "spiffe_id"
	Service    = "service"
	Addr       = "addr"
	Expiry     = "expiry"
	NextRotate = "next_rotation"
	Revision   = "revision"
	Peer       = "peer"
	Path       = "path"
	Attempt    = "attempt"
	Backoff    = "backoff"
)
