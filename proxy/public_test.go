package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestPublicProtocols: the public (edge) listener serves HTTP/1.1 and
// HTTP/2 over TLS and HTTP/1.1 and h2c in plaintext, and handlers learn
// from TLSState whether the client used TLS.
func TestPublicProtocols(t *testing.T) {
	cert, pool := publicCert(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tlsUsed := "plain"
		if TLSState(r) != nil {
			tlsUsed = "tls"
		}
		_, _ = io.WriteString(w, r.Proto+" "+tlsUsed)
	})
	for _, tc := range []struct {
		name  string
		tls   bool
		proto func(*http.Protocols)
		want  string
	}{
		{"tls-h1", true, func(p *http.Protocols) { p.SetHTTP1(true) }, "HTTP/1.1 tls"},
		{"tls-h2", true, func(p *http.Protocols) { p.SetHTTP2(true) }, "HTTP/2.0 tls"},
		{"plain-h1", false, func(p *http.Protocols) { p.SetHTTP1(true) }, "HTTP/1.1 plain"},
		{"plain-h2c", false, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, "HTTP/2.0 plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := PublicConfig{Listener: listen(t), Handler: handler}
			if tc.tls {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
			}
			pub, err := NewPublic(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- pub.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, Protocols: new(http.Protocols)}
			defer tr.CloseIdleConnections()
			tc.proto(tr.Protocols)
			scheme := "http://"
			if tc.tls {
				scheme = "https://"
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(scheme + cfg.Listener.Addr().String() + "/x")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tc.want {
				t.Fatalf("got %q, want %q", body, tc.want)
			}
		})
	}
}

// publicCert returns a certificate for 127.0.0.1 and a pool trusting it.
func publicCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestPublicHostileStarts: connections that start wrong get nothing and
// are closed: silence past ReadHeaderTimeout, a fake HTTP/2 preface on the
// plaintext listener, plaintext bytes on the TLS listener. No request
// reaches the handler.
func TestPublicHostileStarts(t *testing.T) {
	cert, _ := publicCert(t)
	for _, tc := range []struct {
		name  string
		tls   bool
		write string
	}{
		{"silent-plain", false, ""},
		{"silent-tls", true, ""},
		{"fake-preface", false, "PRI * HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"plaintext-on-tls", true, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			cfg := PublicConfig{Listener: listen(t), ReadHeaderTimeout: 200 * time.Millisecond,
				Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) })}
			if tc.tls {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
			}
			pub, err := NewPublic(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- pub.Run(ctx) }()
			defer func() { cancel(); <-done }()
			c, err := net.Dial("tcp", cfg.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.write != "" {
				if _, err := io.WriteString(c, tc.write); err != nil {
					t.Fatal(err)
				}
			}
			// The server closes the connection: reading ends (EOF or reset)
			// long before the 10 s deadline, whatever it sent first.
			if _, err := io.Copy(io.Discard, c); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("connection still open after 10s")
			}
			if n := calls.Load(); n != 0 {
				t.Fatalf("handler called %d times", n)
			}
		})
	}
}
