package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func selfSigned(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key := testca.NewKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func leafSVID(ca *testca.CA, opts testca.Options) *x509svid.SVID {
	certs, key := ca.Leaf(opts)
	return &x509svid.SVID{Certificates: certs, PrivateKey: key}
}

// TestInboundHostileClientCertificates: every hostile client certificate is
// refused during the handshake (the reason is in the server's log), the app
// and the authorizer never see a request, and a valid SVID gets through.
func TestInboundHostileClientCertificates(t *testing.T) {
	var logs syncBuffer
	appHits := 0
	var appMu sync.Mutex
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appMu.Lock()
		appHits++
		appMu.Unlock()
		io.WriteString(w, "ok")
	})
	m := newMesh(t, meshOpts{app: app, inTweak: func(c *InboundConfig) { c.Logger = debugLogger(&logs) }})
	ca := m.ca
	web := svcID("web")
	now := time.Now()
	foreign := testca.New(t, td)
	otherTD := testca.New(t, spiffeid.RequireTrustDomainFromString("other.org"))
	firstLeaf, firstKey := ca.Leaf(testca.Options{URIs: []string{"spiffe://example.org/svc/leafsigner"}})

	tests := []struct {
		name    string
		svid    *x509svid.SVID // nil: no client certificate
		maxVer  uint16
		wantErr string // in the server's handshake error
	}{
		{name: "expired", svid: ca.SVID(web, testca.Options{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Minute)}), wantErr: "x509: certificate has expired or is not yet valid: current time"},
		{name: "not yet valid", svid: ca.SVID(web, testca.Options{NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}), wantErr: "certificate has expired or is not yet valid"},
		{name: "self-signed", svid: selfSigned(t, web), wantErr: "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"},
		{name: "foreign CA, same trust domain", svid: foreign.SVID(web, testca.Options{}), wantErr: "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"},
		{name: "other trust domain", svid: otherTD.SVID(spiffeid.RequireFromPath(otherTD.TrustDomain(), "/svc/web"), testca.Options{}), wantErr: "x509svid: could not get X509 bundle: no bundle for other.org"},
		{name: "trust-domain-only ID", svid: leafSVID(ca, testca.Options{URIs: []string{"spiffe://example.org"}}), wantErr: "svid check: spiffe://example.org is a trust domain ID, not a workload ID"},
		{name: "two URI SANs", svid: leafSVID(ca, testca.Options{URIs: []string{"spiffe://example.org/svc/web", "spiffe://example.org/svc/admin"}}), wantErr: "x509svid: could not get leaf SPIFFE ID: certificate contains more than one URI SAN"},
		{name: "non-spiffe URI", svid: leafSVID(ca, testca.Options{URIs: []string{"https://example.org/svc/web"}}), wantErr: "x509svid: could not get leaf SPIFFE ID: scheme is missing or invalid"},
		{name: "no URI SAN", svid: leafSVID(ca, testca.Options{URIs: []string{}}), wantErr: "x509svid: could not get leaf SPIFFE ID: certificate contains no URI SAN"},
		{name: "codeSigning-only EKU", svid: ca.SVID(web, testca.Options{ExtKey: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}), wantErr: "svid check: extended key usage must include clientAuth and serverAuth"},
		{name: "RSA-1024", svid: ca.SVID(web, testca.Options{RSABits: 1024}), wantErr: "svid check: RSA key of 1024 bits, want at least 2048"},
		{name: "leaf with CA=true", svid: ca.SVID(web, testca.Options{IsCA: true}), wantErr: "leaf certificate with CA flag set"},
		{name: "chain through a leaf", svid: ca.SVID(web, testca.Options{Parent: &testca.LeafSigner{Cert: firstLeaf[0], Key: firstKey}}), wantErr: "signed by unknown authority"},
		{name: "TLS 1.2 client", svid: ca.SVID(web, testca.Options{}), maxVer: tls.VersionTLS12, wantErr: "client offered only unsupported versions"},
		{name: "no certificate", wantErr: "client didn't provide a certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := handshakes(m.usersM, dirInbound)
			logs.reset()
			conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, MaxVersion: tc.maxVer}
			if tc.svid != nil {
				conf.Certificates = []tls.Certificate{testca.TLSCertificate(tc.svid)}
			}
			err := tryRequest(m.in.Addr().String(), conf)
			if err == nil {
				t.Fatal("request with a hostile certificate succeeded")
			}
			eventually(t, "handshake error in log: "+tc.wantErr, func() bool { return strings.Contains(logs.String(), tc.wantErr) })
			if got := handshakes(m.usersM, dirInbound); got != before {
				t.Fatalf("handshake counted as completed (%v -> %v)", before, got)
			}
		})
	}
	appMu.Lock()
	hits := appHits
	appMu.Unlock()
	if hits != 0 || len(m.authz.seen) != 0 {
		t.Fatalf("hostile peers reached the app (%d) or the policy (%d)", hits, len(m.authz.seen))
	}

	t.Run("valid SVID", func(t *testing.T) {
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
			Certificates: []tls.Certificate{testca.TLSCertificate(ca.SVID(web, testca.Options{}))}}
		if err := tryRequest(m.in.Addr().String(), conf); err != nil {
			t.Fatalf("valid SVID refused: %v", err)
		}
		if got := m.authz.last(t).Source.SPIFFEID; got != web.String() {
			t.Fatalf("policy saw source %q, want %q", got, web)
		}
	})
}

// tryRequest does one HTTP/1.1 GET over a fresh TLS connection. With TLS 1.3
// a refused client certificate surfaces at the first read.
func tryRequest(addr string, conf *tls.Config) error {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: users\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.StatusCode}
	}
	return nil
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

// rawInbound sends a raw HTTP/1.1 request to the inbound with a valid web
// SVID and returns the response.
func rawInbound(t *testing.T, m *mesh, raw string) (*http.Response, string) {
	t.Helper()
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
		Certificates: []tls.Certificate{testca.TLSCertificate(m.webSrc.Current())}}
	c, err := tls.Dial("tcp", m.in.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestInboundPathTable drives the CVE path table through a real inbound:
// the path the policy saw is exactly the path the app received, or the
// request is a 400 that reached neither.
func TestInboundPathTable(t *testing.T) {
	var mu sync.Mutex
	var appGot []string
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appGot = append(appGot, r.RequestURI)
		mu.Unlock()
	})
	m := newMesh(t, meshOpts{app: app})
	for _, tc := range pathCases {
		if strings.ContainsAny(tc.target, " \x00\x01") || !strings.HasPrefix(tc.target, "/") && tc.err == nil {
			continue // not sendable on an HTTP/1.1 request line; covered by TestNormalizePath
		}
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				return
			}
			mu.Lock()
			appGot = nil
			mu.Unlock()
			m.authz.mu.Lock()
			m.authz.seen = nil
			m.authz.mu.Unlock()
			resp, body := rawInbound(t, m, "GET "+target+" HTTP/1.1\r\nHost: users\r\n\r\n")
			mu.Lock()
			got := appGot
			mu.Unlock()
			if tc.err != nil {
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("status %d, want 400 (body %s)", resp.StatusCode, body)
				}
				if len(got) != 0 || len(m.authz.seen) != 0 {
					t.Fatalf("refused path reached the app %v or the policy", got)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200 (body %s)", resp.StatusCode, body)
			}
			policy := m.authz.last(t).Request.Path
			wantURI := tc.want
			if tc.query != "" {
				wantURI += "?" + tc.query
			}
			if policy != tc.want || len(got) != 1 || got[0] != wantURI {
				t.Fatalf("policy saw %q, app got %v; want %q / %q", policy, got, tc.want, wantURI)
			}
		})
	}
}

// TestInboundDenyAndHeaders: a deny is a 403 JSON with the decision ID; an
// allow reaches the app with XFCC from the verified peer, incoming XFCC and
// hop-by-hop headers stripped before the policy.
func TestInboundDenyAndHeaders(t *testing.T) {
	var gotHeader http.Header
	var mu sync.Mutex
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotHeader = r.Header.Clone()
		mu.Unlock()
		io.WriteString(w, "hello")
	})
	m := newMesh(t, meshOpts{app: app, allow: []string{"/public"}})

	resp, body := rawInbound(t, m, "GET /admin HTTP/1.1\r\nHost: users\r\n\r\n")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	var deny struct {
		Error      string `json:"error"`
		DecisionID string `json:"decision_id"`
	}
	if err := json.Unmarshal([]byte(body), &deny); err != nil || deny.Error != "forbidden" || deny.DecisionID != "d-deny-1" {
		t.Fatalf("403 body %q (%v)", body, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}

	resp, body = rawInbound(t, m, "GET /public?b=2&a=1&a=3 HTTP/1.1\r\nHost: users\r\n"+
		"X-Forwarded-Client-Cert: By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/admin\r\n"+
		"Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
		"Authorization: Bearer t\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n")
	if resp.StatusCode != http.StatusOK || body != "hello" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	in := m.authz.last(t)
	if in.Source.SPIFFEID != "spiffe://example.org/svc/web" || in.Source.Service != "web" || in.Source.TrustDomain != "example.org" {
		t.Fatalf("source %+v", in.Source)
	}
	if in.Destination.SPIFFEID != "spiffe://example.org/svc/users" || in.Destination.Service != "users" {
		t.Fatalf("destination %+v", in.Destination)
	}
	r := in.Request
	if r.Method != "GET" || r.Path != "/public" || r.Host != "users" || r.Protocol != "HTTP/1.1" {
		t.Fatalf("request %+v", r)
	}
	if q := r.Query["a"]; len(q) != 2 || q[0] != "1" || q[1] != "3" || r.Query["b"][0] != "2" {
		t.Fatalf("query %v", r.Query)
	}
	for _, h := range []string{"x-forwarded-client-cert", "connection", "x-secret-hop", "keep-alive"} {
		if _, ok := r.Headers[h]; ok {
			t.Errorf("policy saw header %q", h)
		}
	}
	if r.Headers["authorization"] != "Bearer t" || r.Headers["x-multi"] != "a, b" {
		t.Fatalf("headers %v", r.Headers)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := gotHeader.Values("X-Forwarded-Client-Cert"); len(got) != 1 || got[0] != "By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/web" {
		t.Fatalf("app XFCC %q", got)
	}
	if gotHeader.Get("X-Secret-Hop") != "" || gotHeader.Get("Keep-Alive") != "" {
		t.Fatalf("hop-by-hop header reached the app: %v", gotHeader)
	}
}

// TestInboundSmuggling: Content-Length with Transfer-Encoding, conflicting
// Content-Length and unsupported transfer codings are refused (400) before
// the policy and the app.
func TestInboundSmuggling(t *testing.T) {
	hits := 0
	var mu sync.Mutex
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
	})
	m := newMesh(t, meshOpts{app: app})
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: users\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: users\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: users\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: users\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: users\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	} {
		resp, _ := rawInbound(t, m, raw)
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotImplemented {
			t.Errorf("%q: status %d, want 400", raw, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 || len(m.authz.seen) != 0 {
		t.Fatalf("smuggling attempts reached the app (%d) or policy (%d)", hits, len(m.authz.seen))
	}
}

// TestMeshPathTable: the same table through both agents (the app's request
// enters the outbound listener, crosses the mesh over HTTP/2, and reaches
// the app through the inbound): the policy and the app agree, or it is 400.
func TestMeshPathTable(t *testing.T) {
	var mu sync.Mutex
	var appGot []string
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appGot = append(appGot, r.RequestURI)
		mu.Unlock()
	})
	m := newMesh(t, meshOpts{app: app})
	for _, tc := range pathCases {
		if tc.target == "" || strings.ContainsAny(tc.target, " \x00\x01") || tc.target == "*" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			appGot = nil
			mu.Unlock()
			m.authz.mu.Lock()
			m.authz.seen = nil
			m.authz.mu.Unlock()
			c, err := net.Dial("tcp", m.out.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET "+tc.target+" HTTP/1.1\r\nHost: users\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mu.Lock()
			got := appGot
			mu.Unlock()
			if tc.err != nil {
				if resp.StatusCode != http.StatusBadRequest || len(got) != 0 || len(m.authz.seen) != 0 {
					t.Fatalf("status %d, app %v, policy calls %d; want 400 reaching neither", resp.StatusCode, got, len(m.authz.seen))
				}
				return
			}
			wantURI := tc.want
			if tc.query != "" {
				wantURI += "?" + tc.query
			}
			in := m.authz.last(t)
			if resp.StatusCode != http.StatusOK || in.Request.Path != tc.want || in.Request.Protocol != "HTTP/2.0" || len(got) != 1 || got[0] != wantURI {
				t.Fatalf("status %d: policy saw %q over %s, app got %v; want %q / %q", resp.StatusCode, in.Request.Path, in.Request.Protocol, got, tc.want, wantURI)
			}
		})
	}
}
