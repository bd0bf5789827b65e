package logkey

// Keys of the authz engine's operational logs (not of audit records).
const (
	Builtins = "builtins" // non-deterministic built-ins a policy calls
	Files    = "files"    // number of files in a policy revision
)
