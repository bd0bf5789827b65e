// Package admin is the agent's local admin listener: /healthz (the process
// is up), /readyz (it can serve: 503 with the reason otherwise), /metrics
// (Prometheus), /status (a JSON document for `meshguard status`) and
// /debug/pprof/. It is generic: the caller passes a prometheus.Gatherer, a
// readiness func and a status func, so parts can be added without changing
// this package.
//
// Usage:
//
//	srv, err := admin.Listen(admin.Config{Addr: "127.0.0.1:15000", Gatherer: reg, Ready: src.Ready, Status: statusDoc})
//	if err != nil { ... }
//	err = srv.Run(ctx) // serves until ctx ends, then shuts down
//
// It imports no meshguard package but internal ones.
package admin
