package boltstore_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/meshguard/meshguard/registry/storetest"
)

type harnessStore struct {
	*boltstore.Store
	path  string
	clock *clock.Fake
}

func open(t *testing.T, path string, clock *clock.Fake) *harnessStore {
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
	hs.clock.Advance(d)
	if _, err := hs.Expire(context.Background()); err != nil {
		t.Fatalf("Expire: %v", err)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) registry.Store {
			return open(t, filepath.Join(t.TempDir(), "registry.db"), clock.NewFake(time.Now()))
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

// TestRestartGrace: leases that ran out while the CA was down get a full
// TTL from the restart, so agents can renew before anything expires.
func TestRestartGrace(t *testing.T) {
	clock := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path, clock)
	ctx := context.Background()
	for _, e := range []registry.Entry{storetest.Entry("users", "10.0.0.1:1", "/users"), storetest.Entry("web", "10.0.0.2:1")} {
		if _, err := s.Put(ctx, e, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	s = open(t, path, clock)
	if n, err := s.Expire(ctx); n != 0 || err != nil {
		t.Fatalf("Expire right after restart = %d, %v; want 0", n, err)
	}
	snap, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snap.Entries {
		if want := clock.Now().Add(10 * time.Second); !e.Expires.Equal(want) {
			t.Fatalf("%s expires %v, want %v", e.Key(), e.Expires, want)
		}
	}
	// Renewed ones live on; the others expire together, one revision each.
	if _, err := s.Renew(ctx, registry.Key{Service: "web", Address: "10.0.0.2:1"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)
	if _, err := s.Renew(ctx, registry.Key{Service: "web", Address: "10.0.0.2:1"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(6 * time.Second)
	if n, err := s.Expire(ctx); n != 1 || err != nil {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	after, _ := s.List(ctx)
	if len(after.Entries) != 1 || after.Entries[0].Service != "web" || after.Revision != snap.Revision+1 {
		t.Fatalf("after expiry: %+v (revision before %d)", after, snap.Revision)
	}
	// The expired route is free.
	if _, err := s.Put(ctx, storetest.Entry("orders", "10.0.0.3:1", "/users"), time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestHostileFile: a store file that is not bbolt is refused, not truncated.
func TestHostileFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	if err := os.WriteFile(path, []byte("not a database, but somebody's data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.Open(path, boltstore.Options{}); err == nil {
		t.Fatal("opened a file that is not a bbolt database")
	}
	b, _ := os.ReadFile(path)
	if string(b) != "not a database, but somebody's data" {
		t.Fatal("the file was changed")
	}
}

// TestResumeBeyondHistory: a watcher further behind than the kept history
// gets a snapshot.
func TestResumeBeyondHistory(t *testing.T) {
	clock := clock.NewFake(time.Now())
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{Now: clock.Now, History: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i, svc := range []string{"a", "b", "c", "d"} {
		if _, err := s.Put(ctx, storetest.Entry(svc, "10.0.0.1:"+string(rune('1'+i))), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for since, want := range map[int64]registry.EventType{1: registry.EventSnapshot, 2: registry.EventPut} {
		wctx, cancel := context.WithCancel(ctx)
		var first registry.Event
		if err := s.Watch(wctx, since, func(ev registry.Event) error { first = ev; cancel(); return nil }); err != nil {
			t.Fatal(err)
		}
		cancel()
		if first.Type != want {
			t.Fatalf("resume from %d began with %s, want %s", since, first.Type, want)
		}
	}
}
