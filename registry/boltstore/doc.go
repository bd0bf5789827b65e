// Package boltstore is the embedded registry store: entries, route claims
// and the revision live in one go.etcd.io/bbolt file (fsynced on every
// commit), so a restarted `ca serve` loses nothing. Leases expire by an
// injected clock: Run sweeps them every second, tests call Expire after
// advancing a fake clock. Watchers are fed from memory; the last few
// thousand changes are kept so a watcher can resume without a snapshot.
//
//	st, err := boltstore.Open(filepath.Join(dir, "registry.db"), boltstore.Options{})
//	...
//	go st.Run(ctx) // lease expiry
//	h := registry.NewHandler(registry.HandlerConfig{Store: st, ...})
//
// It imports only the registry package and bbolt.
package boltstore
