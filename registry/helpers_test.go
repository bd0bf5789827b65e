package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/meshguard/meshguard/registry/etcdstore"
	"github.com/meshguard/meshguard/registry/internal/etcdtest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")

	etcdOnce   sync.Once
	etcdServer *etcdtest.Server
	etcdErr    error
	prefixes   atomic.Int64
)

// tbLike is what the helpers need of a testing.TB; keeper provides it for
// benchmark fixtures that outlive one benchmark run.
type tbLike interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// keeper holds fixtures until the test binary exits.
type keeper struct{}

var (
	atExitMu sync.Mutex
	atExit   []func()
)

func (keeper) Helper()                           {}
func (keeper) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (keeper) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (keeper) Cleanup(f func()) {
	atExitMu.Lock()
	atExit = append(atExit, f)
	atExitMu.Unlock()
}
func (k keeper) TempDir() string {
	dir, err := os.MkdirTemp("", "meshguard-registry-bench-")
	if err != nil {
		panic(err)
	}
	k.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
	if etcdServer != nil {
		etcdServer.Close()
	}
	os.Exit(code)
}

// sharedEtcd starts the package's etcd on first use.
func sharedEtcd(tb tbLike) *etcdtest.Server {
	tb.Helper()
	etcdOnce.Do(func() { etcdServer, etcdErr = etcdtest.Start() })
	if etcdErr != nil {
		tb.Fatal(etcdErr)
	}
	return etcdServer
}

// newEtcdPrefix returns a fresh key prefix, so tests sharing the server do not meet.
func newEtcdPrefix() string { return fmt.Sprintf("/t%d/", prefixes.Add(1)) }

func openEtcd(tb tbLike, prefix string) *etcdstore.Store {
	tb.Helper()
	s, err := etcdstore.Open(context.Background(), sharedEtcd(tb).Endpoints, etcdstore.Options{Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func openBolt(tb tbLike, clock *clock.Fake) *boltstore.Store {
	tb.Helper()
	s, err := boltstore.Open(filepath.Join(tb.TempDir(), "registry.db"), boltstore.Options{Now: clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// mesh is a test CA with a registry API server and clients for identities.
type mesh struct {
	tb  tbLike
	ca  *testca.CA
	srv *httptest.Server
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// serve starts the registry API on a TLS listener like `ca serve`'s: a CA
// certificate for the server, client certificates verified if given.
func serve(tb tbLike, ca *testca.CA, st registry.Store) *mesh {
	tb.Helper()
	h, err := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	// Served directly, so that the handler's own path checks are what the
	// hostile-input test sees (a ServeMux in front would 301 unclean paths).
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{testca.TLSCertificate(ca.SVID(spiffeid.RequireFromPath(td, "/ca"), testca.Options{}))},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	}
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return &mesh{tb: tb, ca: ca, srv: srv}
}

// httpClient is an mTLS client with the SVID of id (no certificate if id is "").
func (m *mesh) httpClient(id string) *http.Client {
	var cfg *tls.Config
	caID := spiffeid.RequireFromPath(td, "/ca")
	if id == "" {
		cfg = tlsconfig.TLSClientConfig(m.ca.Bundle(), tlsconfig.AuthorizeID(caID))
	} else {
		svid := m.ca.SVID(spiffeid.RequireFromString(id), testca.Options{})
		cfg = tlsconfig.MTLSClientConfig(svid, m.ca.Bundle(), tlsconfig.AuthorizeID(caID))
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	m.tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 0}
}

func (m *mesh) client(id string) *registry.Client {
	c, err := registry.NewClient(m.httpClient(id), m.srv.URL)
	if err != nil {
		m.tb.Fatal(err)
	}
	return c
}

func svcID(name string) string { return "spiffe://example.org/svc/" + name }

func reg(service, addr string, routes ...string) registry.Registration {
	return registry.Registration{Service: service, SPIFFEID: svcID(service), Address: addr, Routes: routes, Labels: map[string]string{"version": "v1"}}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb tbLike, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
