// Package registry owns meshguard's service registry: the Entry model and
// its validation, the Store interface (leases, route ownership, revisions,
// watch), the HTTP API that `ca serve` mounts under /v1/registry/, and the
// agent-side client (Registrar, Watcher, Table) with a persisted snapshot.
//
// Stores live in sub-packages: registry/boltstore (embedded, default) and
// registry/etcdstore (etcd://...); registry/storetest is the conformance
// suite both pass.
//
// Server side (`ca serve`):
//
//	st, _ := boltstore.Open(filepath.Join(caDir, "registry.db"), boltstore.Options{}) // or etcdstore.Open
//	go st.Run(ctx)                                                                   // lease expiry
//	h, _ := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: log})
//	router.Handle("/v1/registry/*", h) // TLS listener with tls.VerifyClientCertIfGiven against the root
//
// Agent side:
//
//	c, _ := registry.NewClient(mtlsHTTPClient, caURL)
//	r, _ := registry.NewRegistrar(registry.RegistrarConfig{Client: c, Registration: me})
//	go r.Run(ctx)             // once the inbound listener is ready
//	defer r.Deregister(sctx)  // on SIGTERM, before draining
//	w, _ := registry.NewWatcher(registry.WatcherConfig{Client: c, DataDir: dir, Registerer: reg})
//	go w.Run(ctx)
//	svc, ok := w.Table().Route("/users/42")
//	eps := w.Table().Endpoints(svc)
//
// The HTTP API is described on PathPrefix (api.go).
//
// registry imports no meshguard package except internal/*.
package registry
