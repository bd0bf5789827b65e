package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRegistrar: Run registers, re-registers an entry the registry lost,
// and Deregister removes it and ends Run.
func TestRegistrar(t *testing.T) {
	st := openBolt(t, clock.NewFake(time.Now()))
	m := serve(t, testca.New(t, td), st)
	r, err := registry.NewRegistrar(registry.RegistrarConfig{
		Client:       m.client(svcID("users")),
		Registration: reg("users", "10.0.0.1:15443", "/users"),
		RenewEvery:   10 * time.Millisecond,
		MinBackoff:   5 * time.Millisecond,
		Logger:       quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	listed := func() int { return len(listRaw(t, m.client(svcID("web"))).Entries) }
	eventually(t, "registration", func() bool { return listed() == 1 })
	// The registry loses the entry (say, a wiped store): the next renewal
	// gets 404 and the registrar registers again.
	if err := st.Delete(context.Background(), r.Key()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-registration", func() bool { return listed() == 1 })
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Deregister")
	}
	if n := listed(); n != 0 {
		t.Fatalf("%d entries after Deregister", n)
	}
	if _, ok := r.Entry(); ok {
		t.Fatal("Entry() still reports a registration")
	}
}

// TestRegistrarRefused: a registration the registry refuses for good (here:
// another identity's service) ends Run with ErrRefused.
func TestRegistrarRefused(t *testing.T) {
	m := serve(t, testca.New(t, td), openBolt(t, clock.NewFake(time.Now())))
	r, err := registry.NewRegistrar(registry.RegistrarConfig{
		Client:       m.client(svcID("web")),
		Registration: reg("users", "10.0.0.1:15443"),
		Logger:       quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if !errors.Is(err, registry.ErrRefused) || !strings.Contains(err.Error(), "403 forbidden") {
		t.Fatalf("Run = %v, want ErrRefused with the 403", err)
	}
}

func TestNewRegistrarValidates(t *testing.T) {
	c, _ := registry.NewClient(newNoopHTTPClient(), "https://ca.example:8443")
	_, err := registry.NewRegistrar(registry.RegistrarConfig{Client: c, Registration: reg("users", "nope")})
	if err == nil || err.Error() != `registrar: invalid address "nope": want host:port` {
		t.Fatalf("NewRegistrar = %v", err)
	}
}

// TestWatcherSurvivesOutageAndRestart: the watcher persists its table; with
// the CA gone, a restarted watcher routes from the file and keeps retrying.
func TestWatcherSurvivesOutageAndRestart(t *testing.T) {
	ca := testca.New(t, td)
	st := openBolt(t, clock.NewFake(time.Now()))
	m := serve(t, ca, st)
	dir := t.TempDir()
	ctx := context.Background()
	users := m.client(svcID("users"))
	if _, err := users.Register(ctx, reg("users", "10.0.0.1:15443", "/users")); err != nil {
		t.Fatal(err)
	}

	clock := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	reg1 := prometheus.NewPedanticRegistry()
	w1, err := registry.NewWatcher(registry.WatcherConfig{Client: m.client(svcID("web")), DataDir: dir, Registerer: reg1,
		Logger: quietLogger(), PersistEvery: time.Millisecond, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w1.Run(runCtx) }()
	e2, err := users.Register(ctx, reg("users", "10.0.0.2:15443", "/users"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watcher to see both endpoints", func() bool { return len(w1.Table().Endpoints("users")) == 2 })
	if got := metricValue(t, reg1, "meshguard_registry_revision"); got != float64(e2.Revision) {
		t.Fatalf("meshguard_registry_revision = %v, want %d", got, e2.Revision)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	file := filepath.Join(dir, registry.SnapshotFile)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file mode %v, want 0600", fi.Mode().Perm())
	}

	// The CA goes away; the agent restarts.
	m.srv.Close()
	clock.Advance(90 * time.Second)
	reg2 := prometheus.NewPedanticRegistry()
	w2, err := registry.NewWatcher(registry.WatcherConfig{Client: m.client(svcID("web")), DataDir: dir, Registerer: reg2,
		Logger: quietLogger(), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tab := w2.Table()
	if tab.Revision() != e2.Revision || len(tab.Endpoints("users")) != 2 {
		t.Fatalf("restarted table at revision %d with %d endpoints, want %d with 2", tab.Revision(), len(tab.Endpoints("users")), e2.Revision)
	}
	if svc, ok := tab.Route("/users/7"); !ok || svc != "users" {
		t.Fatalf("restarted table routes /users/7 to %q, %v", svc, ok)
	}
	runCtx2, cancel2 := context.WithCancel(ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- w2.Run(runCtx2) }()
	eventually(t, "reconnect attempts", func() bool { return metricValue(t, reg2, "meshguard_registry_watch_reconnects_total") >= 3 })
	if len(w2.Table().Endpoints("users")) != 2 {
		t.Fatal("table lost while the CA is down")
	}
	age, err := testutil.GatherAndCount(reg2, "meshguard_registry_snapshot_age_seconds")
	if err != nil || age != 1 {
		t.Fatalf("snapshot age metric count %d, %v", age, err)
	}
	if got := metricValue(t, reg2, "meshguard_registry_snapshot_age_seconds"); got != 90 {
		t.Fatalf("snapshot age %v s, want 90", got)
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func metricValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestWatcherIgnoresBadSnapshotFile: a corrupt or hostile file does not
// become the routing table.
func TestWatcherIgnoresBadSnapshotFile(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":      "{",
		"invalid entry": `{"revision":5,"entries":[{"service":"../x","spiffe_id":"spiffe://example.org/svc/x","address":"a:1","weight":1}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, registry.SnapshotFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, _ := registry.NewClient(newNoopHTTPClient(), "https://ca.example:8443")
			w, err := registry.NewWatcher(registry.WatcherConfig{Client: c, DataDir: dir, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if w.Table().Len() != 0 || w.Table().Revision() != 0 {
				t.Fatalf("table from a bad file: %d entries at %d", w.Table().Len(), w.Table().Revision())
			}
		})
	}
}

// newNoopHTTPClient is for clients that are never used to connect.
func newNoopHTTPClient() *http.Client { return &http.Client{} }

// TestWatcherForgetsAnotherStoresTable: a table persisted from another
// registry store (a rebuilt CA) is replaced by a snapshot, not patched with
// revisions that belong to a different history.
func TestWatcherForgetsAnotherStoresTable(t *testing.T) {
	st := openBolt(t, clock.NewFake(time.Now()))
	m := serve(t, testca.New(t, td), st)
	ctx := context.Background()
	users := m.client(svcID("users"))
	for _, addr := range []string{"10.0.0.1:15443", "10.0.0.2:15443"} {
		if _, err := users.Register(ctx, reg("users", addr, "/users")); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	stale := `{"revision":1,"store":"bolt-gone","entries":[{"service":"ghost","spiffe_id":"spiffe://example.org/svc/ghost","address":"10.9.9.9:15443","routes":["/ghost"],"weight":100}]}`
	if err := os.WriteFile(filepath.Join(dir, registry.SnapshotFile), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := registry.NewWatcher(registry.WatcherConfig{Client: m.client(svcID("web")), DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Table().Endpoints("ghost")) != 1 {
		t.Fatal("persisted table not loaded")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	eventually(t, "the snapshot to replace the stale table", func() bool {
		tab := w.Table()
		return len(tab.Endpoints("users")) == 2 && len(tab.Endpoints("ghost")) == 0
	})
	if _, ok := w.Table().Route("/ghost"); ok {
		t.Fatal("stale route survived")
	}
	cancel()
	<-done
}
