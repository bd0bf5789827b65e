// Package stores opens the registry store `ca serve --store` names, so that
// main needs one call: the embedded bbolt file (default) or etcd.
//
//	st, err := stores.Open(ctx, storeFlag, caDir, stores.Options{})
//	defer st.Close()
//	g.Go(func() error { return st.Run(ctx) }) // lease expiry of the embedded store
//
// It imports only the registry packages.
package stores

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/meshguard/meshguard/registry/etcdstore"
)

// FileName is the embedded store's file inside the CA directory.
const FileName = "registry.db"

// Store is a registry store with its background work.
type Store interface {
	registry.Store
	// Run does the store's background work (lease expiry for the embedded
	// store) until ctx ends.
	Run(ctx context.Context) error
}

// Options tune the stores; the zero value is the production setting.
type Options struct {
	// Now is the clock of lease expiry (time.Now if nil).
	Now func() time.Time
	// EtcdPrefix is the key prefix in etcd (etcdstore.DefaultPrefix if empty).
	EtcdPrefix string
}

// Open opens the store spec names: "" or "bolt" for dir/registry.db, or
// "etcd://host:port[,host:port...]". A bad spec is an error that says what
// to write instead.
func Open(ctx context.Context, spec, dir string, opts Options) (Store, error) {
	switch {
	case spec == "" || spec == "bolt":
		if dir == "" {
			return nil, fmt.Errorf("open registry store: the embedded store needs the CA directory")
		}
		return boltstore.Open(filepath.Join(dir, FileName), boltstore.Options{Now: opts.Now})
	case strings.HasPrefix(spec, "etcd://"):
		eps, err := etcdstore.ParseURL(spec)
		if err != nil {
			return nil, err
		}
		return etcdstore.Open(ctx, eps, etcdstore.Options{Prefix: opts.EtcdPrefix, Now: opts.Now})
	default:
		return nil, fmt.Errorf("open registry store: unknown store %q: want etcd://host:port[,host:port...] or nothing for the embedded store", spec)
	}
}
