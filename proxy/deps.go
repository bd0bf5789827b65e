package proxy

import (
	"context"

	"github.com/meshguard/meshguard/authz"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is the agent's live identity: the current X.509-SVID and trust
// bundle, read at every handshake, plus a change signal.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// Changed returns a channel that is closed at the next SVID or bundle
	// change. Call it again after it fires for the change after that.
	Changed() <-chan struct{}
}

// Authorizer decides one inbound request. It never fails: errors inside
// evaluation are a deny. It writes the audit record itself.
type Authorizer interface {
	Authorize(ctx context.Context, in *authz.Input, remoteAddr string) authz.Decision
}

// Endpoint is one instance of a service that the outbound side may call.
type Endpoint struct {
	Service string            // service name, e.g. "users"
	ID      spiffeid.ID       // the SPIFFE ID its inbound listener must present
	Addr    string            // its inbound listener, host:port
	Labels  map[string]string // e.g. "version": "v2"
	Weight  int               // traffic split weight of its version; 0 = unweighted
}

// Peers is the outbound routing table: the registry (or static --peer flags)
// seen from the proxy. Implementations must be safe for concurrent use and
// cheap: both methods run on every outbound request.
type Peers interface {
	// Endpoints returns the endpoints serving service; nil if none is known.
	// The caller does not modify the slice.
	Endpoints(service string) []Endpoint
	// Route returns the service owning the longest registered route prefix
	// of the normalized path, and false if no prefix matches.
	Route(path string) (service string, ok bool)
}
