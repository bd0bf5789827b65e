package ca

import (
	"github.com/meshguard/meshguard/internal/clock"

	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/meshguard/meshguard/internal/testca"
)

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// checkSVID asserts the shape of an issued SVID.
func checkSVID(t *testing.T, resp signResponse, wantID string, wantKey crypto.PublicKey, ttl time.Duration, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	leaf := mustCert(t, resp.Crt)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Fatalf("URI SANs = %v, want exactly [%s]", leaf.URIs, wantID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected non-URI SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !bytes.Equal(leaf.RawSubject, []byte{0x30, 0x00}) {
		t.Errorf("subject = %q, want empty", leaf.Subject)
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidSAN) && !e.Critical {
			t.Error("SAN extension must be critical with an empty subject")
		}
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want a non-CA leaf", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != ttl+Backdate {
		t.Errorf("lifetime = %s, want %s (ttl) + %s (backdate)", got, ttl, Backdate)
	}
	if !leaf.NotBefore.Before(time.Now().Add(-Backdate / 2)) {
		t.Errorf("NotBefore %s is not backdated", leaf.NotBefore)
	}
	if !publicKeysEqual(leaf.PublicKey, wantKey) {
		t.Error("certificate key is not the CSR's key")
	}
	// A real SPIFFE verifier accepts it against the served trust domain.
	td := spiffeid.RequireTrustDomainFromString(testTD)
	bundle := spiffebundle.FromX509Authorities(td, []*x509.Certificate{root})
	var chain []*x509.Certificate
	for _, p := range resp.CertChain {
		chain = append(chain, mustCert(t, p))
	}
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		t.Fatalf("go-spiffe verify: %v", err)
	}
	if id.String() != wantID {
		t.Fatalf("verified ID %s, want %s", id, wantID)
	}
	return leaf
}

func TestSignIssuesSVID(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, func(c *Config) { c.SVIDTTL = 20 * time.Minute })
	const id = "spiffe://example.org/svc/web"
	key := newKey(t)
	// The CSR's subject (the ID as common name, as the step CLI sends it)
	// does not make it into the SVID: its subject is empty.
	code, resp, raw := post(t, r.client(t, nil), r.url+"/1.0/sign", map[string]string{
		"csr": newCSR(t, key, id, id), "ott": mustToken(t, dir, id),
	})
	if code != http.StatusCreated {
		t.Fatalf("sign: %d %s", code, raw)
	}
	checkSVID(t, resp, id, key.Public(), 20*time.Minute, r.root)
	if got := mustCert(t, resp.CA); !got.Equal(mustCert(t, resp.CertChain[1])) {
		t.Error("ca field is not the intermediate")
	}
}

func TestSignKeyTypes(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	const id = "spiffe://example.org/svc/keys"
	genRSA := func(bits int) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	genEC := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name     string
		key      crypto.Signer
		wantCode int
		wantMsg  string
	}{
		{name: "rsa 1024", key: genRSA(1024), wantCode: 400, wantMsg: "CSR key: RSA key of 1024 bits is too weak; use at least 2048 bits (or ECDSA P-256)"},
		{name: "ecdsa P-224", key: genEC(elliptic.P224()), wantCode: 400, wantMsg: "CSR key: ECDSA curve P-224 not accepted; use P-256 or P-384"},
		{name: "ecdsa P-521", key: genEC(elliptic.P521()), wantCode: 400, wantMsg: "CSR key: ECDSA curve P-521 not accepted; use P-256 or P-384"},
		{name: "ecdsa P-384", key: genEC(elliptic.P384()), wantCode: 201},
		{name: "ed25519", key: edKey, wantCode: 201},
		{name: "rsa 2048", key: genRSA(2048), wantCode: 201},
	}
	// One token for all: a refused weak key must not spend it.
	tok := mustToken(t, dir, id)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantCode == 201 {
				tok = mustToken(t, dir, id)
			}
			code, resp, raw := r.signWith(t, tok, tc.key, id)
			if code != tc.wantCode {
				t.Fatalf("code = %d, want %d; %s", code, tc.wantCode, raw)
			}
			if tc.wantCode != 201 {
				if resp.Message != tc.wantMsg || resp.Status != tc.wantCode {
					t.Fatalf("error = %d %q, want %q", resp.Status, resp.Message, tc.wantMsg)
				}
				return
			}
			checkSVID(t, resp, id, tc.key.Public(), DefaultSVIDTTL, r.root)
		})
	}
	// The token refused with weak keys before is still good once.
	if code, _, raw := r.signWith(t, mustToken(t, dir, id), newKey(t), id); code != 201 {
		t.Fatalf("sign after weak keys: %d %s", code, raw)
	}
}

func TestTokenReplayRefusedAcrossRestart(t *testing.T) {
	dir := newCADir(t)
	const id = "spiffe://example.org/svc/once"
	tok := mustToken(t, dir, id)
	unused := mustToken(t, dir, id)

	r := startServer(t, dir, nil)
	if code, _, raw := r.signWith(t, tok, newKey(t), id); code != 201 {
		t.Fatalf("first use: %d %s", code, raw)
	}
	code, resp, raw := r.signWith(t, tok, newKey(t), id)
	if code != http.StatusUnauthorized || resp.Message != "the token was already used; join tokens are single use" {
		t.Fatalf("replay: %d %s; want 401 mentioning reuse", code, raw)
	}
	r.stop()

	// A new process on the same directory remembers the token.
	r2 := startServer(t, dir, nil)
	if code, _, raw := r2.signWith(t, tok, newKey(t), id); code != http.StatusUnauthorized {
		t.Fatalf("replay after restart: %d %s; want 401", code, raw)
	}
	// A token minted before the restart and never used still works.
	if code, _, raw := r2.signWith(t, unused, newKey(t), id); code != 201 {
		t.Fatalf("unused token after restart: %d %s", code, raw)
	}
}

func TestIdentityComesFromToken(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	const a = "spiffe://example.org/svc/a"
	const b = "spiffe://example.org/svc/b"
	tests := []struct {
		name     string
		cn       string
		uris     []string
		wantCode int
	}{
		{name: "CSR claims B", uris: []string{b}, wantCode: 403},
		{name: "CSR claims A and B", uris: []string{a, b}, wantCode: 403},
		{name: "CSR claims other trust domain", uris: []string{"spiffe://evil.org/svc/a"}, wantCode: 403},
		{name: "CSR common name B, no SANs", cn: b, wantCode: 403},
		{name: "CSR common name admin", cn: "admin", uris: []string{a}, wantCode: 403},
		{name: "CSR without SANs", wantCode: 201},
		{name: "CSR claims A", uris: []string{a}, wantCode: 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t)
			code, resp, raw := post(t, r.client(t, nil), r.url+"/1.0/sign", map[string]string{
				"csr": newCSR(t, key, tc.cn, tc.uris...), "ott": mustToken(t, dir, a),
			})
			if code != tc.wantCode {
				t.Fatalf("code = %d, want %d; %s", code, tc.wantCode, raw)
			}
			if code == 201 {
				checkSVID(t, resp, a, key.Public(), DefaultSVIDTTL, r.root)
			} else if resp.Crt != "" {
				t.Fatal("refused request returned a certificate")
			}
		})
	}
}

func TestCSRWithNonURISANsRefused(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	const id = "spiffe://example.org/svc/a"
	for _, tc := range []struct {
		name string
		tmpl *x509.CertificateRequest
	}{
		{name: "DNS SAN", tmpl: &x509.CertificateRequest{DNSNames: []string{"a.example.org"}}},
		{name: "IP SAN", tmpl: &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}},
		{name: "e-mail SAN", tmpl: &x509.CertificateRequest{EmailAddresses: []string{"a@example.org"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.CreateCertificateRequest(rand.Reader, tc.tmpl, newKey(t))
			if err != nil {
				t.Fatal(err)
			}
			csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
			code, resp, raw := post(t, r.client(t, nil), r.url+"/1.0/sign", map[string]string{"csr": csr, "ott": mustToken(t, dir, id)})
			if code != http.StatusForbidden || resp.Crt != "" {
				t.Fatalf("got %d %s; want 403", code, raw)
			}
		})
	}
}

func TestTokenRefusals(t *testing.T) {
	dir := newCADir(t)
	other := newCADir(t)
	r := startServer(t, dir, nil)
	const id = "spiffe://example.org/svc/web"
	expired := signTestToken(t, dir, tokenClaims(id, time.Now().Add(-time.Hour), time.Minute))
	tests := []struct {
		name     string
		token    string
		wantCode int
		wantMsg  string
	}{
		{name: "empty", token: "", wantCode: 401, wantMsg: "missing token (ott)"},
		{name: "garbage", token: "not-a-jwt", wantCode: 401, wantMsg: "token is not a JWT"},
		{name: "other CA's token", token: mustToken(t, other, id), wantCode: 401, wantMsg: "The request lacked necessary authorization"},
		{name: "expired", token: expired, wantCode: 401, wantMsg: "the token has expired"},
		{name: "foreign trust domain", token: signTestToken(t, dir, tokenClaims("spiffe://evil.org/svc/web", time.Now(), time.Minute)),
			wantCode: 403, wantMsg: "the requested identity is outside the CA's trust domain example.org"},
		{name: "not a workload path", token: signTestToken(t, dir, tokenClaims("spiffe://example.org/admin", time.Now(), time.Minute)),
			wantCode: 403, wantMsg: "token: SPIFFE ID spiffe://example.org/admin must have the form spiffe://example.org/svc/NAME"},
		{name: "sans differ from subject", token: signTestToken(t, dir, func() map[string]any {
			c := tokenClaims(id, time.Now(), time.Minute)
			c["sans"] = []string{"spiffe://example.org/svc/other"}
			return c
		}()), wantCode: 401, wantMsg: "token sans must be exactly its subject"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, resp, raw := r.signWith(t, tc.token, newKey(t))
			if code != tc.wantCode || !strings.HasPrefix(resp.Message, tc.wantMsg) {
				t.Fatalf("got %d %s; want %d %q", code, raw, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// tokenClaims are join-token claims for id, issued at iat.
func tokenClaims(id string, iat time.Time, ttl time.Duration) map[string]any {
	return map[string]any{
		"iss": ProvisionerName, "sub": id, "sans": []string{id}, "aud": []string{TokenAudience},
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": iat.Add(ttl).Unix(), "jti": time.Now().String(),
	}
}

// signTestToken signs arbitrary claims with the provisioner key of dir,
// to build tokens NewToken refuses to make.
func signTestToken(t *testing.T, dir string, claims map[string]any) string {
	t.Helper()
	_, key, err := loadProvisionerKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signJWT(key, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRekeyAndRenew(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	const id = "spiffe://example.org/svc/rot"
	key := newKey(t)
	code, resp, raw := r.signWith(t, mustToken(t, dir, id), key, id)
	if code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	first := mustCert(t, resp.Crt)
	client := r.client(t, tlsCert(t, resp, key))

	newKey2 := newKey(t)
	code, resp2, raw := post(t, client, r.url+"/1.0/rekey", map[string]string{"csr": newCSR(t, newKey2, "")})
	if code != 201 {
		t.Fatalf("rekey: %d %s", code, raw)
	}
	second := checkSVID(t, resp2, id, newKey2.Public(), DefaultSVIDTTL, r.root)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("rekey returned the same serial")
	}

	// Rekey with the new SVID, and a CSR claiming another ID: still the same ID.
	client2 := r.client(t, tlsCert(t, resp2, newKey2))
	key3 := newKey(t)
	code, resp3, raw := post(t, client2, r.url+"/1.0/rekey", map[string]string{"csr": newCSR(t, key3, "x", "spiffe://example.org/svc/admin")})
	if code != 201 {
		t.Fatalf("second rekey: %d %s", code, raw)
	}
	checkSVID(t, resp3, id, key3.Public(), DefaultSVIDTTL, r.root)

	// Renew keeps the key.
	code, resp4, raw := post(t, client2, r.url+"/1.0/renew", nil)
	if code != 201 {
		t.Fatalf("renew: %d %s", code, raw)
	}
	checkSVID(t, resp4, id, newKey2.Public(), DefaultSVIDTTL, r.root)

	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name     string
		client   *http.Client
		path     string
		csrKey   crypto.Signer
		huge     bool
		wantCode int
		wantMsg  string
	}{
		{name: "rekey without client cert", client: r.client(t, nil), path: "/1.0/rekey", csrKey: newKey(t), wantCode: 401, wantMsg: "rekey needs the current SVID as TLS client certificate"},
		{name: "renew without client cert", client: r.client(t, nil), path: "/1.0/renew", wantCode: 401, wantMsg: "renew needs the current SVID as TLS client certificate"},
		{name: "rekey with the same key", client: client2, path: "/1.0/rekey", csrKey: newKey2, wantCode: 400, wantMsg: "rekey needs a new key; the CSR carries the current one"},
		{name: "rekey to a weak key", client: client2, path: "/1.0/rekey", csrKey: weak, wantCode: 400, wantMsg: "CSR key: RSA key of 1024 bits is too weak"},
		{name: "rekey without CSR", client: client2, path: "/1.0/rekey", wantCode: 400, wantMsg: "csr: want exactly one PEM CERTIFICATE REQUEST"},
		{name: "rekey with a huge body", client: client2, path: "/1.0/rekey", huge: true, wantCode: 413, wantMsg: "read request body: http: request body too large"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]string{}
			if tc.csrKey != nil {
				body["csr"] = newCSR(t, tc.csrKey, "")
			}
			if tc.huge {
				body["csr"] = strings.Repeat("A", maxRequestBody)
			}
			code, resp, raw := post(t, tc.client, r.url+tc.path, body)
			if code != tc.wantCode || !strings.HasPrefix(resp.Message, tc.wantMsg) {
				t.Fatalf("got %d %s; want %d %q", code, raw, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestRekeyWithForeignSVIDFailsHandshake(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	foreign := testca.New(t, spiffeid.RequireTrustDomainFromString(testTD))
	svid := foreign.SVID(spiffeid.RequireFromString("spiffe://example.org/svc/web"), testca.Options{})
	cert := testca.TLSCertificate(svid)
	c := r.client(t, nil)
	// Present the foreign SVID even though the server's acceptable CAs do
	// not list its issuer (Go's client would otherwise send none).
	c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}
	body := strings.NewReader(`{"csr":""}`)
	resp, err := c.Post(r.url+"/1.0/rekey", "application/json", body)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("rekey with an SVID of another CA: status %d, want a TLS failure", resp.StatusCode)
	}
}

func TestBundleAndStepEndpoints(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	c := r.client(t, nil)
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := c.Get(r.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	code, body, _ := get("/bundle")
	if code != 200 {
		t.Fatalf("/bundle: %d %s", code, body)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(testTD), []byte(body))
	if err != nil {
		t.Fatalf("parse bundle: %v", err)
	}
	if auth := b.X509Authorities(); len(auth) != 1 || !auth[0].Equal(r.root) {
		t.Fatalf("bundle authorities = %d, want the root", len(auth))
	}

	code, body, _ = get("/roots.pem")
	if block, _ := pem.Decode([]byte(body)); code != 200 || block == nil || !bytes.Equal(block.Bytes, r.root.Raw) {
		t.Fatalf("/roots.pem: %d %s", code, body)
	}
	code, body, _ = get("/root/" + Fingerprint(r.root))
	var rootResp struct {
		CA string `json:"ca"`
	}
	if err := json.Unmarshal([]byte(body), &rootResp); code != 200 || err != nil || !mustCert(t, rootResp.CA).Equal(r.root) {
		t.Fatalf("/root/{sha}: %d %s", code, body)
	}
	code, body, _ = get("/1.0/roots")
	var roots struct {
		Crts []string `json:"crts"`
	}
	// step-ca answers /roots with 201 Created; so do we.
	if err := json.Unmarshal([]byte(body), &roots); code != 201 || err != nil || len(roots.Crts) != 1 {
		t.Fatalf("/1.0/roots: %d %s", code, body)
	}
	if code, body, _ = get("/health"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/health: %d %s", code, body)
	}
	for _, path := range []string{"/1.0/revoke", "/ssh/roots", "/1.0/crl", "/nope", "/v1/registry/services"} {
		if code, body, h := get(path); code != 404 || h.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s; want 404 JSON", path, code, body)
		}
	}
}

func TestHostileSignRequests(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	key := newKey(t)
	good := newCSR(t, key, "")
	block, _ := pem.Decode([]byte(good))
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-3] ^= 0xff
	tests := []struct {
		name     string
		body     string
		wantCode int
		wantMsg  string
	}{
		{name: "not JSON", body: "{", wantCode: 400, wantMsg: "request body is not a JSON sign request"},
		{name: "too large", body: `{"csr":"` + strings.Repeat("A", maxRequestBody) + `"}`, wantCode: 413, wantMsg: "read request body: http: request body too large"},
		{name: "CSR not PEM", body: `{"csr":"hello","ott":"x"}`, wantCode: 400, wantMsg: "csr: want exactly one PEM CERTIFICATE REQUEST"},
		{name: "two CSRs", body: mustJSON(t, map[string]string{"csr": good + good, "ott": "x"}), wantCode: 400, wantMsg: "csr: want exactly one PEM CERTIFICATE REQUEST"},
		{name: "CSR with bad signature", body: mustJSON(t, map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})), "ott": "x"}), wantCode: 400, wantMsg: "csr:"},
		{name: "notBefore in the future", body: mustJSON(t, map[string]string{"csr": good, "ott": "x", "notBefore": "2030-01-01T00:00:00Z"}), wantCode: 400, wantMsg: "notBefore is chosen by the CA"},
		{name: "certificate instead of CSR", body: mustJSON(t, map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.root.Raw})), "ott": "x"}), wantCode: 400, wantMsg: "csr: want exactly one PEM CERTIFICATE REQUEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := r.client(t, nil).Post(r.url+"/1.0/sign", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e errorBody
			raw, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(raw, &e)
			if resp.StatusCode != tc.wantCode || !strings.HasPrefix(e.Message, tc.wantMsg) {
				t.Fatalf("got %d %s; want %d %q", resp.StatusCode, raw, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRateLimit(t *testing.T) {
	dir := newCADir(t)
	clock := clock.NewFake(time.Now())
	r := startServer(t, dir, func(c *Config) { c.Rate = 1; c.Burst = 2; c.Now = clock.Now })
	c := r.client(t, nil)
	send := func() (int, string) {
		resp, err := c.Post(r.url+"/1.0/sign", "application/json", strings.NewReader("{"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i, want := range []int{400, 400, 429, 429} {
		if code, body := send(); code != want {
			t.Fatalf("request %d: %d %s; want %d", i, code, body, want)
		} else if code == 429 && !strings.Contains(body, "too many certificate requests from this address") {
			t.Fatalf("429 body = %s", body)
		}
	}
	clock.Advance(time.Second)
	if code, body := send(); code != 400 {
		t.Fatalf("after refill: %d %s; want 400", code, body)
	}

	// Renew and rekey are limited per SPIFFE ID, apart from the address.
	const id = "spiffe://example.org/svc/rl"
	key := newKey(t)
	clock.Advance(3 * time.Second)
	code, resp, raw := r.signWith(t, mustToken(t, dir, id), key, id)
	if code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	mtls := r.client(t, tlsCert(t, resp, key))
	for i, want := range []int{201, 201, 429} {
		if code, _, raw := post(t, mtls, r.url+"/1.0/renew", nil); code != want {
			t.Fatalf("renew %d: %d %s; want %d", i, code, raw, want)
		}
	}
}

func TestLimiterSweep(t *testing.T) {
	clock := clock.NewFake(time.Now())
	l := newLimiter(1, 1, clock.Now)
	if !l.allow("a") || l.allow("a") {
		t.Fatal("burst of 1 not enforced")
	}
	clock.Advance(2 * time.Second)
	l.sweep(clock.Now())
	if len(l.buckets) != 0 {
		t.Fatalf("refilled bucket not swept: %d left", len(l.buckets))
	}
}

func TestRegistryMountSeesCallerSVID(t *testing.T) {
	dir := newCADir(t)
	reg := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "anonymous", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, r.URL.Path+" "+r.TLS.VerifiedChains[0][0].URIs[0].String())
	})
	r := startServer(t, dir, func(c *Config) { c.Registry = reg })
	const id = "spiffe://example.org/svc/reg"
	key := newKey(t)
	code, resp, raw := r.signWith(t, mustToken(t, dir, id), key, id)
	if code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	for _, tc := range []struct {
		client *http.Client
		want   string
		code   int
	}{
		{client: r.client(t, tlsCert(t, resp, key)), want: "/v1/registry/services " + id, code: 200},
		{client: r.client(t, nil), want: "anonymous\n", code: 401},
	} {
		res, err := tc.client.Get(r.url + "/v1/registry/services")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.code || string(b) != tc.want {
			t.Fatalf("registry: %d %q; want %d %q", res.StatusCode, b, tc.code, tc.want)
		}
	}
}

func TestNewServerRefusesBadDirectories(t *testing.T) {
	empty := t.TempDir()
	missing := empty + "/nope"
	corrupt := newCADir(t)
	if err := os.WriteFile(corrupt+"/"+IntermediateKeyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	swapped := newCADir(t)
	otherDir := newCADir(t)
	b, _ := os.ReadFile(otherDir + "/" + IntermediateKeyFile)
	if err := os.WriteFile(swapped+"/"+IntermediateKeyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "empty dir", cfg: Config{Dir: empty}, wantErr: "is not an initialised CA directory (ca.json is missing)"},
		{name: "missing dir", cfg: Config{Dir: missing}, wantErr: "does not exist; run `meshguard ca init"},
		{name: "corrupt key", cfg: Config{Dir: corrupt}, wantErr: "read key " + corrupt + "/intermediate.key"},
		{name: "key of another CA", cfg: Config{Dir: swapped}, wantErr: "intermediate.key does not match intermediate.crt"},
		{name: "bad listen", cfg: Config{Dir: otherDir, Listen: "nope"}, wantErr: `listen address "nope"`},
		{name: "ttl too short", cfg: Config{Dir: otherDir, SVIDTTL: time.Second}, wantErr: "svid ttl 1s out of range"},
		{name: "intermediate expired", cfg: Config{Dir: otherDir, Now: func() time.Time { return time.Now().Add(IntermediateLifetime + time.Hour) }},
			wantErr: `"meshguard intermediate CA example.org" is valid only from`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := listDir(t, tc.cfg.Dir)
			s, err := NewServer(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("NewServer succeeded")
			}
			var ce *ConfigError
			if !strings.Contains(err.Error(), tc.wantErr) || !asConfigError(err, &ce) {
				t.Fatalf("err = %v, want ConfigError containing %q", err, tc.wantErr)
			}
			if after := listDir(t, tc.cfg.Dir); after != before {
				t.Fatalf("directory changed: %q -> %q", before, after)
			}
		})
	}
}

func TestServerCertificateNames(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, func(c *Config) { c.ServerNames = []string{"ca.example.net"} })
	pool := x509.NewCertPool()
	pool.AddCert(r.root)
	addr := r.srv.Addr().String()
	tests := []struct {
		name       string
		serverName string
		wantErr    string
	}{
		{name: "listen IP", serverName: "127.0.0.1"},
		{name: "configured name", serverName: "ca.example.net"},
		{name: "name the client calls it by", serverName: "meshguard-ca.meshguard.svc"},
		{name: "not a DNS name", serverName: "bad_name", wantErr: "certificate is valid for ca.example.net, not bad_name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: tc.serverName, MinVersion: tls.VersionTLS13})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			leaf := conn.ConnectionState().PeerCertificates[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/meshguard/ca" {
				t.Errorf("URIs = %v", leaf.URIs)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
				t.Errorf("EKU = %v, want serverAuth only", leaf.ExtKeyUsage)
			}
			if _, err := svidcheck.Leaf(leaf); err == nil {
				t.Error("the CA's server certificate passes as a workload SVID")
			}
		})
	}
	// Names asked for are cached, boundedly.
	for i := 0; i < 2*maxSNINames; i++ {
		if _, err := r.srv.serverCertFor(&tls.ClientHelloInfo{ServerName: fmt.Sprintf("n%d.example.net", i)}); err != nil {
			t.Fatal(err)
		}
	}
	r.srv.certMu.Lock()
	n := len(r.srv.sniCerts)
	r.srv.certMu.Unlock()
	if n > maxSNINames {
		t.Fatalf("%d cached server certificates, want at most %d", n, maxSNINames)
	}
}
