// Package authz decides every request with Rego: it loads and hot-reloads a
// policy directory, evaluates the prepared query per request with a deadline,
// fails closed, caches decisions, and writes denials to the audit log.
//
// It imports no other meshguard package; the proxy consumes it through a
// small interface of its own.
package authz
