package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEdge runs `meshguard edge` in front of the users agent: outside
// clients reach only the exposed, rewritten prefix over TLS, spoofed
// identity headers never reach the app, the destination's policy sees the
// edge's SPIFFE ID, and a client over its rate gets 429.
func TestEdge(t *testing.T) {
	m := newMesh(t)
	writeFile(t, filepath.Join(m.policyDir, "data.json"), `{"meshguard": {"allowlist": {
		"users": {"edge": [{"methods": ["GET"], "paths": ["/users/*"]}]}
	}, "deny": []}}`)
	m.addAgent("users", "/users")
	certFile, keyFile, pool := edgeCert(t, m.dir)
	public := freeAddr(t)
	e := m.addAgentService("edge", "edge", "/edge", "edge", "--listen", public,
		"--tls-cert", certFile, "--tls-key", keyFile,
		"--expose", "/api/users", "--rewrite", "/api/users=/users",
		"--rate", "5/s", "--burst", "10")
	m.waitReady()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		ForceAttemptHTTP2: true,
	}}
	base := "https://" + public
	send := func(path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", path, err)
		}
		return resp.StatusCode, string(body)
	}

	var reply struct {
		Path   string `json:"path"`
		Caller string `json:"caller"`
	}
	eventually(t, 30*time.Second, "the edge reaches users", func() error {
		code, body := send("/api/users/42", map[string]string{
			"X-Forwarded-Client-Cert": "By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/admin",
			"Host":                    "billing",
		})
		if code != 200 {
			return fmt.Errorf("status %d: %s", code, body)
		}
		return json.Unmarshal([]byte(body), &reply)
	})
	if reply.Path != "/users/42" {
		t.Fatalf("the app got path %q, want the rewritten /users/42", reply.Path)
	}
	if reply.Caller != "spiffe://example.org/svc/edge" {
		t.Fatalf("the app saw caller %q, want the edge's SPIFFE ID (a spoofed XFCC must not survive)", reply.Caller)
	}
	for _, path := range []string{"/admin", "/api/users/../../admin", "/users/42", "/api/usersX"} {
		if code, body := send(path, nil); code != 404 && code != 400 {
			t.Fatalf("%s: status %d (%s), want 404: not exposed", path, code, body)
		}
	}
	limited := 0
	for i := 0; i < 40; i++ {
		if code, _ := send("/api/users/1", nil); code == 429 {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("40 requests at once with --rate 5/s --burst 10: none limited")
	}
	if v := metric(t, e.admin, "meshguard_edge_rate_limited_total", ""); v < float64(limited) {
		t.Fatalf("meshguard_edge_rate_limited_total = %v, want >= %d", v, limited)
	}
}

// edgeCert writes a self-signed certificate for 127.0.0.1 and returns the
// files and a pool trusting it.
func edgeCert(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestEdgesSideBySide runs two edges (each an ordinary mesh member with its
// own SVID of the edge service); killing one (SIGKILL) leaves the other
// serving outside clients.
func TestEdgesSideBySide(t *testing.T) {
	m := newMesh(t)
	writeFile(t, filepath.Join(m.policyDir, "data.json"), `{"meshguard": {"allowlist": {
		"users": {"edge": [{"methods": ["GET"], "paths": ["/users/*"]}]}
	}, "deny": []}}`)
	m.addAgent("users", "/users")
	certFile, keyFile, pool := edgeCert(t, m.dir)
	publics := []string{freeAddr(t), freeAddr(t)}
	var edges []*meshAgent
	for i, public := range publics {
		edges = append(edges, m.addAgentService(fmt.Sprintf("edge-%d", i+1), "edge", "/edge", "edge",
			"--listen", public, "--tls-cert", certFile, "--tls-key", keyFile,
			"--expose", "/api/users", "--rewrite", "/api/users=/users"))
	}
	m.waitReady()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
	}}
	get := func(public string) error {
		resp, err := client.Get("https://" + public + "/api/users/7")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	for _, public := range publics {
		public := public
		eventually(t, 30*time.Second, "edge "+public+" serves", func() error { return get(public) })
	}
	edges[0].proc.kill()
	for i := 0; i < 200; i++ {
		if err := get(publics[1]); err != nil {
			t.Fatalf("request %d through the surviving edge after the other was killed: %v", i, err)
		}
	}
	if err := get(publics[0]); err == nil {
		t.Fatal("the killed edge still answers")
	}
}
