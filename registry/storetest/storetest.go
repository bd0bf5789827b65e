// Package storetest is the conformance suite every registry.Store passes.
// A store's test calls Run with a Harness that makes fresh stores and ends
// leases (a fake clock for the embedded store, a short real TTL for etcd).
//
// It imports only the registry package.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/registry"
)

// Harness adapts one store implementation to the suite.
type Harness struct {
	// New returns an empty store, closed by a t.Cleanup.
	New func(t *testing.T) registry.Store
	// TTL is the lease the expiry tests put entries with.
	TTL time.Duration
	// Expire returns once the lease of k (put with TTL, not renewed) has
	// ended and the store has deleted the entry.
	Expire func(t *testing.T, s registry.Store, k registry.Key)
	// Advance, if set, moves the store's clock forward and sweeps leases;
	// the renewal test runs only with it.
	Advance func(t *testing.T, s registry.Store, d time.Duration)
	// Reopen, if set, closes s and opens the same data again.
	Reopen func(t *testing.T, s registry.Store) registry.Store
}

// Entry is a valid normalized entry of example.org for tests.
func Entry(service, addr string, routes ...string) registry.Entry {
	return EntryOf("spiffe://example.org/svc/"+service, service, addr, routes...)
}

// EntryOf is Entry with an explicit owner (used to make conflicting owners).
func EntryOf(id, service, addr string, routes ...string) registry.Entry {
	e := registry.Entry{Service: service, SPIFFEID: id, Address: addr, Routes: routes, Labels: map[string]string{"version": "v1"}}
	e.Normalize()
	return e
}

const longTTL = time.Minute

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	t.Run("PutList", func(t *testing.T) { testPutList(t, h) })
	t.Run("Upsert", func(t *testing.T) { testUpsert(t, h) })
	t.Run("RouteConflict", func(t *testing.T) { testRouteConflict(t, h) })
	t.Run("ConcurrentClaims", func(t *testing.T) { testConcurrentClaims(t, h) })
	t.Run("RenewDelete", func(t *testing.T) { testRenewDelete(t, h) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, h) })
	t.Run("WatchResume", func(t *testing.T) { testWatchResume(t, h) })
	t.Run("Expiry", func(t *testing.T) { testExpiry(t, h) })
	t.Run("ID", func(t *testing.T) { testID(t, h) })
	if h.Advance != nil {
		t.Run("RenewKeepsLease", func(t *testing.T) { testRenewKeepsLease(t, h) })
	}
	if h.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, h) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustPut(t *testing.T, s registry.Store, e registry.Entry, ttl time.Duration) registry.Entry {
	t.Helper()
	got, err := s.Put(ctx(t), e, ttl)
	if err != nil {
		t.Fatalf("Put(%s): %v", e.Key(), err)
	}
	return got
}

// strip drops the store-assigned fields for comparisons.
func strip(es []registry.Entry) []registry.Entry {
	out := make([]registry.Entry, 0, len(es))
	for _, e := range es {
		e = e.Clone()
		e.Expires, e.Revision = time.Time{}, 0
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key().String() < out[j].Key().String() })
	return out
}

func mustList(t *testing.T, s registry.Store) registry.Snapshot {
	t.Helper()
	snap, err := s.List(ctx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return snap
}

func wantEntries(t *testing.T, s registry.Store, want ...registry.Entry) registry.Snapshot {
	t.Helper()
	snap := mustList(t, s)
	if got, w := strip(snap.Entries), strip(want); !reflect.DeepEqual(got, w) {
		t.Fatalf("List = %+v\nwant %+v", got, w)
	}
	return snap
}

func testPutList(t *testing.T, h Harness) {
	s := h.New(t)
	if snap := mustList(t, s); len(snap.Entries) != 0 {
		t.Fatalf("new store lists %d entries", len(snap.Entries))
	}
	before := time.Now()
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), longTTL)
	b := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/", "/static"), longTTL)
	if a.Revision <= 0 || b.Revision <= a.Revision {
		t.Fatalf("revisions %d then %d, want increasing and positive", a.Revision, b.Revision)
	}
	if a.Expires.Before(before.Add(longTTL - 5*time.Second)) {
		t.Fatalf("Expires %v, want about now+%v", a.Expires, longTTL)
	}
	b2 := mustPut(t, s, Entry("web", "[fd00::1]:15443", "/", "/static"), longTTL)
	keys, err := s.Keys(ctx(t), "web")
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Address < keys[j].Address })
	if want := []registry.Key{b.Key(), b2.Key()}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("Keys(web) = %v, want %v", keys, want)
	}
	if keys, err := s.Keys(ctx(t), "nobody"); err != nil || len(keys) != 0 {
		t.Fatalf("Keys(nobody) = %v, %v", keys, err)
	}
	// A service whose name is a prefix of another's has only its own keys.
	mustPut(t, s, Entry("web2", "10.0.0.3:15443"), longTTL)
	if keys, _ := s.Keys(ctx(t), "web"); len(keys) != 2 {
		t.Fatalf("Keys(web) = %v after adding web2", keys)
	}
	if err := s.Delete(ctx(t), Entry("web2", "10.0.0.3:15443").Key()); err != nil {
		t.Fatal(err)
	}
	snap := wantEntries(t, s, a, b, b2)
	if snap.Revision < b.Revision {
		t.Fatalf("List revision %d < last put %d", snap.Revision, b.Revision)
	}
	for _, e := range snap.Entries {
		if e.Revision <= 0 {
			t.Fatalf("listed %s has revision %d", e.Key(), e.Revision)
		}
	}
}

func testUpsert(t *testing.T, h Harness) {
	s := h.New(t)
	mustPut(t, s, Entry("users", "10.0.0.1:15443", "/a", "/b"), longTTL)
	v2 := Entry("users", "10.0.0.1:15443", "/a")
	v2.Labels = map[string]string{"version": "v2"}
	v2.Weight = 5
	mustPut(t, s, v2, longTTL)
	// /b is released: another identity may claim it now.
	other := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/b"), longTTL)
	wantEntries(t, s, v2, other)
}

func testRouteConflict(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/api", "/users"), longTTL)
	// Same owner, second endpoint, same routes: fine.
	a2 := mustPut(t, s, Entry("users", "10.0.0.3:15443", "/api"), longTTL)
	// Nested prefix owned by someone else: fine (longest prefix wins).
	n := mustPut(t, s, Entry("orders", "10.0.0.4:15443", "/api/orders"), longTTL)
	before := wantEntries(t, s, a, a2, n)

	tests := []struct {
		name string
		e    registry.Entry
		want string
	}{
		{"new entry", Entry("web", "10.0.0.2:15443", "/web", "/api"), `route prefix "/api" is owned by spiffe://example.org/svc/users`},
		{"nested owner", Entry("web", "10.0.0.2:15443", "/api/orders"), `route prefix "/api/orders" is owned by spiffe://example.org/svc/orders`},
		{"upsert of existing", Entry("orders", "10.0.0.4:15443", "/api/orders", "/users"), `route prefix "/users" is owned by spiffe://example.org/svc/users`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Put(ctx(t), tt.e, longTTL)
			var ce *registry.ConflictError
			if !errors.As(err, &ce) || !errors.Is(err, registry.ErrRouteConflict) {
				t.Fatalf("Put = %v, want a *ConflictError", err)
			}
			if ce.Error() != tt.want {
				t.Fatalf("error %q, want %q", ce.Error(), tt.want)
			}
			after := wantEntries(t, s, a, a2, n)
			if after.Revision != before.Revision {
				t.Fatalf("revision moved from %d to %d on a refused put", before.Revision, after.Revision)
			}
		})
	}
}

func testConcurrentClaims(t *testing.T, h Harness) {
	s := h.New(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := Entry(fmt.Sprintf("svc%d", i), fmt.Sprintf("10.0.1.%d:15443", i+1), "/contested", fmt.Sprintf("/own%d", i))
			_, errs[i] = s.Put(context.Background(), e, longTTL)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, registry.ErrRouteConflict):
		default:
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d puts claimed /contested, want exactly 1", won)
	}
	if got := len(mustList(t, s).Entries); got != 1 {
		t.Fatalf("%d entries stored, want 1 (losers must change nothing)", got)
	}
}

func testRenewDelete(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), longTTL)
	r, err := s.Renew(ctx(t), a.Key())
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if r.Key() != a.Key() || r.Revision != a.Revision || r.Expires.Before(a.Expires.Add(-5*time.Second)) {
		t.Fatalf("Renew = %+v after put %+v", r, a)
	}
	missing := registry.Key{Service: "nope", Address: "10.9.9.9:1"}
	if _, err := s.Renew(ctx(t), missing); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Renew(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), missing); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Delete(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), a.Key()); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantEntries(t, s)
	if _, err := s.Renew(ctx(t), a.Key()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Renew(deleted) = %v, want ErrNotFound", err)
	}
	// The route is free again.
	mustPut(t, s, Entry("web", "10.0.0.2:15443", "/users"), longTTL)
}

// watchTable applies a watch stream to a map and lets the test wait for a state.
type watchTable struct {
	mu      sync.Mutex
	entries map[registry.Key]registry.Entry
	rev     int64
	types   []registry.EventType
	err     error
	changed chan struct{}
}

// startWatch watches from since, starting from a table holding initial
// (what the watcher knew at since).
func startWatch(t *testing.T, s registry.Store, since int64, initial ...registry.Entry) *watchTable {
	t.Helper()
	w := &watchTable{entries: map[registry.Key]registry.Entry{}, rev: since, changed: make(chan struct{}, 1)}
	for _, e := range initial {
		w.entries[e.Key()] = e
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		err := s.Watch(c, since, func(ev registry.Event) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			if ev.Revision <= w.rev && ev.Type != registry.EventSnapshot {
				w.err = fmt.Errorf("event %s at revision %d after revision %d", ev.Type, ev.Revision, w.rev)
			}
			w.types = append(w.types, ev.Type)
			switch ev.Type {
			case registry.EventSnapshot:
				w.entries = map[registry.Key]registry.Entry{}
				for _, e := range ev.Entries {
					w.entries[e.Key()] = e
				}
			case registry.EventPut:
				w.entries[ev.Entry.Key()] = *ev.Entry
			case registry.EventDelete:
				delete(w.entries, ev.Entry.Key())
			}
			w.rev = ev.Revision
			select {
			case w.changed <- struct{}{}:
			default:
			}
			return nil
		})
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		}
	}()
	return w
}

// waitFor waits until the watcher has seen revision rev and then compares.
func (w *watchTable) waitFor(t *testing.T, rev int64, want ...registry.Entry) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		w.mu.Lock()
		got, cur, err, seen := w.list(), w.rev, w.err, len(w.types)
		w.mu.Unlock()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if cur >= rev && seen > 0 {
			if g, wnt := strip(got), strip(want); !reflect.DeepEqual(g, wnt) {
				t.Fatalf("watched table at revision %d = %+v\nwant %+v", cur, g, wnt)
			}
			return
		}
		select {
		case <-w.changed:
		case <-deadline:
			t.Fatalf("watch stuck at revision %d, want %d", cur, rev)
		}
	}
}

func (w *watchTable) list() []registry.Entry {
	out := make([]registry.Entry, 0, len(w.entries))
	for _, e := range w.entries {
		out = append(out, e)
	}
	return out
}

func testWatch(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), longTTL)
	w := startWatch(t, s, 0)
	w.waitFor(t, a.Revision, a)
	b := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/web"), longTTL)
	w.waitFor(t, b.Revision, a, b)
	if err := s.Delete(ctx(t), a.Key()); err != nil {
		t.Fatal(err)
	}
	snap := mustList(t, s)
	w.waitFor(t, snap.Revision, b)
	w.mu.Lock()
	types := append([]registry.EventType(nil), w.types...)
	w.mu.Unlock()
	if want := []registry.EventType{registry.EventSnapshot, registry.EventPut, registry.EventDelete}; !reflect.DeepEqual(types, want) {
		t.Fatalf("event types %v, want %v", types, want)
	}
	// A refused put sends nothing.
	if _, err := s.Put(ctx(t), Entry("orders", "10.0.0.3:15443", "/web"), longTTL); !errors.Is(err, registry.ErrRouteConflict) {
		t.Fatalf("conflicting put = %v", err)
	}
	c := mustPut(t, s, Entry("orders", "10.0.0.3:15443", "/orders"), longTTL)
	w.waitFor(t, c.Revision, b, c)
	w.mu.Lock()
	n := len(w.types)
	w.mu.Unlock()
	if n != 4 {
		t.Fatalf("%d events, want 4 (the refused put must not show)", n)
	}
}

func testWatchResume(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), longTTL)
	b := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/web"), longTTL)
	if err := s.Delete(ctx(t), a.Key()); err != nil {
		t.Fatal(err)
	}
	c := mustPut(t, s, Entry("orders", "10.0.0.3:15443", "/orders"), longTTL)
	// Resume from just after a: sees the delete of a and the put of c, not
	// a snapshot, and ends with the same table.
	w := startWatch(t, s, b.Revision, a, b)
	w.waitFor(t, c.Revision, b, c)
	w.mu.Lock()
	types := append([]registry.EventType(nil), w.types...)
	w.mu.Unlock()
	if want := []registry.EventType{registry.EventDelete, registry.EventPut}; !reflect.DeepEqual(types, want) {
		t.Fatalf("resumed event types %v, want %v", types, want)
	}
	// Resuming at the current revision sends nothing until the next change.
	w2 := startWatch(t, s, c.Revision, b, c)
	d := mustPut(t, s, Entry("pay", "10.0.0.4:15443"), longTTL)
	w2.waitFor(t, d.Revision, b, c, d)
	// A revision from the future (another store) gets a snapshot.
	w3 := startWatch(t, s, d.Revision+1000)
	e := mustPut(t, s, Entry("mail", "10.0.0.5:15443"), longTTL)
	w3.waitFor(t, e.Revision, b, c, d, e)
	w3.mu.Lock()
	first := w3.types[0]
	w3.mu.Unlock()
	if first != registry.EventSnapshot {
		t.Fatalf("watch from a future revision began with %s, want a snapshot", first)
	}
}

func testExpiry(t *testing.T, h Harness) {
	s := h.New(t)
	keep := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/web"), longTTL)
	dying := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), h.TTL)
	w := startWatch(t, s, 0)
	w.waitFor(t, dying.Revision, keep, dying)
	h.Expire(t, s, dying.Key())
	snap := wantEntries(t, s, keep)
	w.waitFor(t, snap.Revision, keep)
	if _, err := s.Renew(ctx(t), dying.Key()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Renew(expired) = %v, want ErrNotFound", err)
	}
	// Its route is free.
	mustPut(t, s, Entry("orders", "10.0.0.3:15443", "/users"), longTTL)
}

func testRenewKeepsLease(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443"), 10*time.Second)
	h.Advance(t, s, 6*time.Second)
	if _, err := s.Renew(ctx(t), a.Key()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	h.Advance(t, s, 6*time.Second)
	wantEntries(t, s, a)
	h.Advance(t, s, 5*time.Second)
	wantEntries(t, s)
}

func testReopen(t *testing.T, h Harness) {
	s := h.New(t)
	a := mustPut(t, s, Entry("users", "10.0.0.1:15443", "/users"), longTTL)
	b := mustPut(t, s, Entry("web", "10.0.0.2:15443", "/web"), longTTL)
	before := mustList(t, s)
	id, err := s.ID(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	s = h.Reopen(t, s)
	if id2, err := s.ID(ctx(t)); err != nil || id2 != id {
		t.Fatalf("ID after reopen = %q, %v; want %q", id2, err, id)
	}
	after := wantEntries(t, s, a, b)
	if after.Revision != before.Revision {
		t.Fatalf("revision %d after reopen, want %d", after.Revision, before.Revision)
	}
	if _, err := s.Put(ctx(t), Entry("orders", "10.0.0.3:15443", "/users"), longTTL); !errors.Is(err, registry.ErrRouteConflict) {
		t.Fatalf("route claims lost on reopen: %v", err)
	}
	c := mustPut(t, s, Entry("orders", "10.0.0.3:15443"), longTTL)
	if c.Revision <= before.Revision {
		t.Fatalf("revision %d after reopen, want > %d", c.Revision, before.Revision)
	}
}

func testID(t *testing.T, h Harness) {
	s1, s2 := h.New(t), h.New(t)
	id1, err := s1.ID(ctx(t))
	if err != nil || id1 == "" {
		t.Fatalf("ID = %q, %v", id1, err)
	}
	if again, _ := s1.ID(ctx(t)); again != id1 {
		t.Fatalf("ID changed from %q to %q", id1, again)
	}
	if id2, _ := s2.ID(ctx(t)); id2 == id1 {
		t.Fatalf("two stores share the ID %q", id1)
	}
	var got string
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	err = s1.Watch(c, 0, func(ev registry.Event) error {
		got = ev.Store
		cancel()
		return nil
	})
	if err != nil || got != id1 {
		t.Fatalf("snapshot event store %q (%v), want %q", got, err, id1)
	}
}
