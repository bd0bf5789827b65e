package boltstore_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/meshguard/meshguard/registry/storetest"
)

// fakeClock is a settable clock shared by a store and its test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type harnessStore struct {
	*boltstore.Store
	path  string
	clock *fakeClock
}

func open(t *testing.T, path string, clock *fakeClock) *harnessStore {
	t.Helper()
	s, err := boltstore.Open(path, boltstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := &harnessStore{Store: s, path: path, clock: clock}
	t.Cleanup(func() { s.Close() })
	return hs
}

func sweep(t *testing.T, s registry.Store, d time.Duration) {
	t.Helper()
	hs := s.(*harnessStore)
	hs.clock.Add(d)
	if _, err := hs.Expire(context.Background()); err != nil {
		t.Fatalf("Expire: %v", err)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) registry.Store {
			return open(t, filepath.Join(t.TempDir(), "registry.db"), &fakeClock{now: time.Now()})
		},
		TTL: 10 * time.Second,
		Expire: func(t *testing.T, s registry.Store, _ registry.Key) {
			sweep(t, s, 11*time.Second)
		},
		Advance: sweep,
		Reopen: func(t *testing.T, s registry.Store) registry.Store {
			hs := s.(*harnessStore)
			if err := hs.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, hs.path, hs.clock)
		},
	})
}
