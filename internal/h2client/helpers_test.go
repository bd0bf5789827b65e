package h2client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/h2server"
	"github.com/meshguard/meshguard/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// wait bounds anything a test waits for: never reached by a working
// client, it only bounds how long a broken one hangs.
const wait = 20 * time.Second

// waitUntil polls cond until it holds, failing the test at the deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition
	}
}

// waitFor waits for ch, failing the test after the deadline.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// signal is a channel closed once.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }
func (s *signal) fire()  { s.once.Do(func() { close(s.ch) }) }

// backend is an HTTP/2 server over TLS on loopback.
type backend struct {
	addr     string
	tls      *tls.Config // client side
	shutdown func(ctx context.Context) error
}

type backendKind struct {
	name  string
	start func(t *testing.T, h http.Handler) *backend
}

var backends = []backendKind{
	{"net/http", startNetHTTP},
	{"h2server", startH2Server},
}

// startNetHTTP serves h with net/http's HTTP/2 server.
func startNetHTTP(t *testing.T, h http.Handler) *backend {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.EnableHTTP2 = true
	ts.Config.ErrorLog = nil
	ts.StartTLS()
	t.Cleanup(ts.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	return &backend{
		addr:     ts.Listener.Addr().String(),
		tls:      &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}, ServerName: "127.0.0.1"},
		shutdown: ts.Config.Shutdown,
	}
}

var (
	certOnce sync.Once
	cert     tls.Certificate
	certPool *x509.CertPool
)

// testCert is a self-signed certificate for 127.0.0.1.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "h2client test"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	return cert, certPool
}

// startH2Server serves h with internal/h2server on TLS connections.
func startH2Server(t *testing.T, h http.Handler) *backend {
	t.Helper()
	crt, pool := testCert(t)
	s, err := h2server.New(h2server.Config{
		Handler:              h,
		MaxConcurrentStreams: 256,
		StreamWindow:         1 << 16,
		ConnWindow:           1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{crt}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := nc.(*tls.Conn)
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				if err := tc.HandshakeContext(ctx); err != nil {
					_ = nc.Close()
					return
				}
				s.ServeConn(context.Background(), nc)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			t.Error("ServeConn did not return after Close")
		}
	})
	return &backend{
		addr:     ln.Addr().String(),
		tls:      &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}, ServerName: "127.0.0.1"},
		shutdown: s.Shutdown,
	}
}

// dial opens a client connection to b.
func (b *backend) dial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	d := &net.Dialer{Timeout: wait}
	tc, err := tls.DialWithDialer(d, "tcp", b.addr, b.tls)
	if err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		_ = tc.Close()
		t.Fatalf("negotiated %q, want h2", p)
	}
	c, err := New(tc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		select {
		case <-c.readDone:
		case <-time.After(wait):
			t.Error("the read loop did not end after Close")
		}
	})
	return c
}

// forEachBackend runs test against both servers.
func forEachBackend(t *testing.T, test func(t *testing.T, start func(t *testing.T, h http.Handler) *backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.start) })
	}
}

// newReq returns a request for path on the test server.
func newReq(t *testing.T, ctx context.Context, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "https://127.0.0.1"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req on c and reads the whole response body.
func do(t *testing.T, c *Conn, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, b
}

// checkGet makes a GET of /check on c and expects the echo handler's answer.
func checkGet(t *testing.T, c *Conn) {
	t.Helper()
	resp, b := do(t, c, newReq(t, context.Background(), "GET", "/check", nil))
	if resp.StatusCode != 200 || string(b) != "GET /check" {
		t.Fatalf("GET /check: %d %q", resp.StatusCode, b)
	}
}

// deadline bounds a wait in a select.
func deadline() <-chan time.Time { return time.After(wait) }
