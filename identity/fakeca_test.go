package identity

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// fakeCA is a minimal stand-in for step-ca's shape (root by fingerprint,
// /1.0/sign, /1.0/rekey over mTLS, /roots.pem), used until the real CA is
// merged and for hostile answers the real CA would never give.
type fakeCA struct {
	t     *testing.T
	root  *testca.CA
	inter *testca.CA
	srv   *httptest.Server
	token string

	mu         sync.Mutex
	issueURI   string        // overrides the URI SAN of issued certificates
	otherKey   bool          // issue for a key the agent does not hold
	ttl        time.Duration // lifetime of issued certificates
	servedRoot *x509.Certificate
	rekeys     int
	signs      int
	rawSign    []byte              // when set, /1.0/sign answers these bytes
	rawStatus  int                 // with this status
	roots      []*x509.Certificate // /roots.pem; default the root
}

func newFakeCA(t *testing.T, token string) *fakeCA {
	t.Helper()
	root := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	inter := root.Intermediate()
	f := &fakeCA{t: t, root: root, inter: inter, token: token, ttl: time.Hour, servedRoot: root.Root()}
	certs, key := inter.Leaf(testca.Options{URIs: []string{}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKey: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	serverCert := testca.TLSCertificate(&x509svid.SVID{Certificates: certs, PrivateKey: key})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /root/{sha}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		served := f.servedRoot
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"ca": pemCert(served)})
	})
	mux.HandleFunc("GET /roots.pem", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		roots := f.roots
		f.mu.Unlock()
		if roots == nil {
			roots = []*x509.Certificate{root.Root()}
		}
		for _, c := range roots {
			w.Write([]byte(pemCert(c)))
		}
	})
	mux.HandleFunc("POST /1.0/sign", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ CSR, OTT string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.OTT != f.token {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]any{"status": 401, "message": "The request lacked necessary authorization to be completed."})
			return
		}
		f.mu.Lock()
		f.signs++
		raw, code := f.rawSign, f.rawStatus
		f.mu.Unlock()
		if raw != nil {
			w.WriteHeader(code)
			w.Write(raw)
			return
		}
		f.issue(w, req.CSR)
	})
	mux.HandleFunc("POST /1.0/rekey", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"status": 400, "message": "missing client certificate"})
			return
		}
		var req struct{ CSR string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.rekeys++
		f.mu.Unlock()
		f.issue(w, req.CSR)
	})
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: root.Pool()}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCA) issue(w http.ResponseWriter, csrPEM string) {
	block, _ := pem.Decode([]byte(csrPEM))
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil || len(csr.URIs) != 1 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	uri, otherKey, ttl := csr.URIs[0], f.otherKey, f.ttl
	if f.issueURI != "" {
		uri, _ = url.Parse(f.issueURI)
	}
	f.mu.Unlock()
	pub := csr.PublicKey
	if otherKey {
		pub = testca.NewKey(f.t).Public()
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(ttl),
		URIs:        []*url.URL{uri},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.inter.Cert(), pub, f.inter.Key())
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	leaf, _ := x509.ParseCertificate(der)
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{
		"crt":       pemCert(leaf),
		"ca":        pemCert(f.inter.Cert()),
		"certChain": []string{pemCert(leaf), pemCert(f.inter.Cert())},
	})
}

func (f *fakeCA) fingerprint() string { return Fingerprint(f.root.Root()) }

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}
