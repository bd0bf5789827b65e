// Package registry owns meshguard's service registry: the Entry model and
// its validation, the Store interface (leases, route ownership, revisions,
// watch), the HTTP API that `ca serve` mounts under /v1/registry/, and the
// agent-side client (Registrar, Watcher, Table) with a persisted snapshot.
//
// Stores live in sub-packages: registry/boltstore (embedded, default) and
// registry/etcdstore (etcd://...); registry/storetest is the conformance
// suite both pass.
//
// Server side:
//
//	h := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: log})
//	mux.Handle("/v1/registry/", h) // on a TLS listener with tls.VerifyClientCertIfGiven
//
// Agent side:
//
//	w, _ := registry.NewWatcher(registry.WatcherConfig{HTTPClient: mtls, BaseURL: caURL, DataDir: dir})
//	go w.Run(ctx)
//	svc, ok := w.Table().Route("/users/42")
//	eps := w.Table().Endpoints(svc)
//
// registry imports no meshguard package except internal/*.
package registry
