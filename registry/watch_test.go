package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/etcdstore"
	"github.com/meshguard/meshguard/registry/storetest"
)

// streamLines reads NDJSON events from a raw watch request.
func streamLines(t *testing.T, hc *http.Client, url string) (<-chan registry.Event, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("watch answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan registry.Event, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev registry.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				return
			}
			ch <- ev
		}
	}()
	return ch, func() { cancel(); resp.Body.Close(); <-done }
}

func nextEvent(t *testing.T, ch <-chan registry.Event, skipHeartbeats bool) registry.Event {
	t.Helper()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			if skipHeartbeats && ev.Type == registry.EventHeartbeat {
				continue
			}
			return ev
		case <-time.After(30 * time.Second):
			t.Fatal("no event")
		}
	}
}

// TestWatchStream checks the wire format: heartbeat, snapshot, changes,
// resume with ?since=, periodic heartbeats.
func TestWatchStream(t *testing.T) {
	ca := testca.New(t, td)
	st := openBolt(t, clock.NewFake(time.Now()))
	h, err := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: quietLogger(), Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := serve(t, ca, st)
	m.srv.Config.Handler = h
	hc := m.httpClient(svcID("web"))
	users := m.client(svcID("users"))
	ctx := context.Background()
	a, err := users.Register(ctx, reg("users", "10.0.0.1:15443", "/users"))
	if err != nil {
		t.Fatal(err)
	}

	ch, stop := streamLines(t, hc, m.srv.URL+"/v1/registry/watch")
	if ev := nextEvent(t, ch, false); ev.Type != registry.EventHeartbeat {
		t.Fatalf("first line %+v, want a heartbeat", ev)
	}
	snap := nextEvent(t, ch, true)
	if snap.Type != registry.EventSnapshot || snap.Revision != a.Revision || len(snap.Entries) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	b, err := users.Register(ctx, reg("users", "10.0.0.2:15443", "/users"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ch, true); ev.Type != registry.EventPut || ev.Revision != b.Revision || ev.Entry.Address != "10.0.0.2:15443" {
		t.Fatalf("put event %+v", ev)
	}
	// Idle: heartbeats keep coming.
	for range 3 {
		if ev := nextEvent(t, ch, false); ev.Type != registry.EventHeartbeat {
			t.Fatalf("idle stream sent %+v", ev)
		}
	}
	stop()

	if err := users.Deregister(ctx, a.Key()); err != nil {
		t.Fatal(err)
	}
	ch, stop = streamLines(t, hc, m.srv.URL+"/v1/registry/watch?since="+strconv.FormatInt(b.Revision, 10))
	defer stop()
	if ev := nextEvent(t, ch, true); ev.Type != registry.EventDelete || ev.Entry.Address != "10.0.0.1:15443" || ev.Revision != b.Revision+1 {
		t.Fatalf("resumed stream began with %+v, want the delete", ev)
	}
	// Resuming within the same store works; a revision of another store
	// gets a snapshot.
	id, _ := st.ID(ctx)
	for store, want := range map[string]registry.EventType{id: registry.EventDelete, "bolt-other": registry.EventSnapshot} {
		ch, stop := streamLines(t, hc, m.srv.URL+"/v1/registry/watch?since="+strconv.FormatInt(b.Revision, 10)+"&store="+store)
		ev := nextEvent(t, ch, true)
		stop()
		if ev.Type != want {
			t.Fatalf("resume with store %q began with %s, want %s", store, ev.Type, want)
		}
		if want == registry.EventSnapshot && (ev.Store != id || len(ev.Entries) != 1) {
			t.Fatalf("snapshot %+v", ev)
		}
	}
}

// TestClientWatchIdle: a stream that stops sending (no heartbeats) is
// dropped after the idle timeout instead of hanging forever.
func TestClientWatchIdle(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := registry.NewClient(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.SetIdleTimeout(50 * time.Millisecond)
	err = c.Watch(context.Background(), 0, func(registry.Event) error { return nil })
	if err == nil || err.Error() != "watch registry: stream silent for 50ms" {
		t.Fatalf("Watch = %v", err)
	}
}

// TestClientWatchHostileStream: garbage from the server ends the watch
// with an error; the table is not touched.
func TestClientWatchHostileStream(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not JSON", "{nope\n", "watch registry: decode event: invalid character 'n' looking for beginning of object key string"},
		{"unknown type", `{"type":"drop-table","revision":1}` + "\n", `watch registry: unknown event type "drop-table"`},
		{"put without entry", `{"type":"put","revision":2}` + "\n", "watch registry: put event at revision 2 without an entry"},
		{"cut short", `{"type":"heartbeat"}`, "watch registry: unexpected EOF"},
		{"error status", "", "watch registry: registry: 500 internal_server_error: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.body == "" {
					w.WriteHeader(500)
					return
				}
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, _ := registry.NewClient(srv.Client(), srv.URL)
			n := 0
			err := c.Watch(context.Background(), 0, func(ev registry.Event) error { n++; return nil })
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Watch = %v, want %q", err, tt.want)
			}
			if strings.Contains(tt.name, "without") && n != 0 {
				t.Fatal("bad event delivered")
			}
		})
	}
}

// TestEtcdReplicasRaceForRoute: two replicas (two etcd clients) racing to
// give one route to two identities: exactly one wins.
func TestEtcdReplicasRaceForRoute(t *testing.T) {
	prefix := newEtcdPrefix()
	stores := []*etcdstore.Store{openEtcd(t, prefix), openEtcd(t, prefix)}
	for round := range 5 {
		route := "/r" + strconv.Itoa(round)
		errs := make(chan error, 2)
		for i, st := range stores {
			go func() {
				e := storetest.Entry("svc"+strconv.Itoa(i), "10.0.0."+strconv.Itoa(i+1)+":1", route)
				e.Address = "10.0." + strconv.Itoa(round) + "." + strconv.Itoa(i+1) + ":1"
				_, err := st.Put(context.Background(), e, time.Minute)
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("round %d: results %v and %v, want exactly one success", round, e1, e2)
		}
	}
}
