package etcdstore_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/etcdstore"
	"github.com/meshguard/meshguard/registry/internal/etcdtest"
	"github.com/meshguard/meshguard/registry/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	server   *etcdtest.Server
	prefixes atomic.Int64
)

func TestMain(m *testing.M) {
	s, err := etcdtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

// open returns a store under a fresh prefix of the shared server.
func open(t testing.TB) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), server.Endpoints, etcdstore.Options{
		Prefix: fmt.Sprintf("/test%d/", prefixes.Add(1)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) registry.Store { return open(t) },
		// etcd's minimum lease is a couple of seconds; expiry runs on
		// etcd's own clock, so the test polls for it.
		TTL: 2 * time.Second,
		Expire: func(t *testing.T, s registry.Store, k registry.Key) {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				snap, err := s.List(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, e := range snap.Entries {
					found = found || e.Key() == k
				}
				if !found {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Fatalf("%s still listed 30s after its lease should have ended", k)
		},
	})
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		spec, want, wantErr string
	}{
		{spec: "etcd://h1:2379,10.0.0.2:2379", want: "[http://h1:2379 http://10.0.0.2:2379]"},
		{spec: "etcd://h1:2379/", want: "[http://h1:2379]"},
		{spec: "http://h1:2379", wantErr: `parse store "http://h1:2379": want etcd://host:port[,host:port...]`},
		{spec: "etcd://", wantErr: `parse store "etcd://": want etcd://host:port[,host:port...]`},
		{spec: "etcd://h1", wantErr: `parse store "etcd://h1": invalid address "h1": want host:port`},
		{spec: "etcd://h1:2379,,h2:1", wantErr: `parse store "etcd://h1:2379,,h2:1": invalid address "": want host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := etcdstore.ParseURL(tt.spec)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != tt.want {
				t.Fatalf("= %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// TestResumeAfterCompaction: a watcher resuming from a revision etcd has
// compacted away gets a snapshot instead of a gap.
func TestResumeAfterCompaction(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	a, err := s.Put(ctx, storetest.Entry("users", "10.0.0.1:1"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Put(ctx, storetest.Entry("web", "10.0.0.2:1"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: server.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, b.Revision); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var first registry.Event
	err = s.Watch(wctx, a.Revision-1, func(ev registry.Event) error {
		first = ev
		cancel()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if first.Type != registry.EventSnapshot || len(first.Entries) != 2 || first.Revision < b.Revision {
		t.Fatalf("first event after compaction %+v, want a snapshot of 2 entries", first)
	}
}
