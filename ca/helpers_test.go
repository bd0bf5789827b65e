package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const testTD = "example.org"

// newCADir initialises a CA for example.org in a fresh directory.
func newCADir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := Init(InitConfig{Dir: dir, TrustDomain: testTD}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// running is a Server serving on 127.0.0.1:0 for one test.
type running struct {
	srv  *Server
	url  string
	root *x509.Certificate
	stop func()
}

// startServer runs a Server on dir until stop (or the test's end).
func startServer(t testing.TB, dir string, mod func(*Config)) *running {
	t.Helper()
	cfg := Config{Dir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewJSONHandler(&testWriter{t}, nil))
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server stopped before ready: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return &running{srv: srv, url: "https://" + srv.Addr().String(), root: srv.Root(), stop: stop}
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

// client returns an HTTPS client trusting the CA root, presenting cert if
// given.
func (r *running) client(t testing.TB, cert *tls.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(r.root)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// newCSR makes a CSR for key with the given URI SANs and common name.
func newCSR(t testing.TB, key crypto.Signer, cn string, uris ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	tmpl.Subject.CommonName = cn
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signResponse is the part of smallstep's sign/renew/rekey answer we read.
type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
	Status    int      `json:"status"`
	Message   string   `json:"message"`
}

// post sends a JSON body and returns the status and decoded answer.
func post(t testing.TB, c *http.Client, url string, body any) (int, signResponse, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out signResponse
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, string(raw)
}

// signWith bootstraps an SVID: token + CSR for key, over /1.0/sign.
func (r *running) signWith(t testing.TB, token string, key crypto.Signer, csrURIs ...string) (int, signResponse, string) {
	t.Helper()
	return post(t, r.client(t, nil), r.url+"/1.0/sign", map[string]string{"csr": newCSR(t, key, "", csrURIs...), "ott": token})
}

// mustToken mints a token for id in dir.
func mustToken(t testing.TB, dir, id string) string {
	t.Helper()
	tok, err := CreateToken(dir, spiffeid.RequireFromString(id), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func mustCert(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(s)
	if err != nil {
		t.Fatalf("parse certificate: %v\n%s", err, s)
	}
	return c
}

// tlsCert turns a sign response and key into a client certificate (leaf
// plus intermediate, as an agent presents it).
func tlsCert(t testing.TB, resp signResponse, key crypto.Signer) *tls.Certificate {
	t.Helper()
	c := &tls.Certificate{PrivateKey: key}
	for _, p := range resp.CertChain {
		c.Certificate = append(c.Certificate, mustCert(t, p).Raw)
	}
	return c
}

// listDir names the entries of dir ("" when it does not exist).
func listDir(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

func asConfigError(err error, target **ConfigError) bool { return errors.As(err, target) }
