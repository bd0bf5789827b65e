package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/meshguard/meshguard/registry/etcdstore"
)

// registryDBFile is the embedded registry store inside the CA directory.
const registryDBFile = "registry.db"

// runningStore is a registry store and its background loop: lease sweeping
// for the embedded store; for etcd, whose leases expire on their own, Run
// only waits for ctx (etcd's history is compacted by etcd itself: run it
// with --auto-compaction-retention).
type runningStore interface {
	registry.Store
	Run(ctx context.Context) error
}

// openRegistryStore opens the store named by --store: empty (or "bolt") is
// the embedded file store in the CA directory; "etcd://h1:2379,h2:2379" is
// etcd. A malformed value is a usage error.
func openRegistryStore(ctx context.Context, dir, spec string) (runningStore, error) {
	switch {
	case spec == "" || spec == "bolt":
		s, err := boltstore.Open(filepath.Join(dir, registryDBFile), boltstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("opening the embedded registry store: %w", err)
		}
		return s, nil
	case strings.HasPrefix(spec, "etcd://"):
		endpoints, err := etcdstore.ParseURL(spec)
		if err != nil {
			return nil, usagef("ca serve: --store %q: %v", spec, err)
		}
		s, err := etcdstore.Open(ctx, endpoints, etcdstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("connecting to etcd %s: %w", strings.Join(endpoints, ","), err)
		}
		return s, nil
	default:
		return nil, usagef("ca serve: --store %q: want empty (embedded store) or etcd://HOST:PORT[,HOST:PORT...]", spec)
	}
}

// registryHandler opens the store and returns the registry API for ca serve.
func registryHandler(ctx context.Context, dir, spec string, log *slog.Logger) (http.Handler, runningStore, error) {
	td, err := ca.LoadTrustDomain(dir)
	if err != nil {
		return nil, nil, caError(err)
	}
	store, err := openRegistryStore(ctx, dir, spec)
	if err != nil {
		return nil, nil, err
	}
	h, err := registry.NewHandler(registry.HandlerConfig{Store: store, TrustDomain: td, Logger: log})
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("building the registry API: %w", err)
	}
	return h, store, nil
}
