package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
	"github.com/meshguard/meshguard/registry/boltstore"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// registryFixture is a CA-like TLS server with the registry API and step's
// /root/<fp>, plus PEM files for a caller.
type registryFixture struct {
	url, fp, bundle, svidFile, dataDir string
}

func writePEM(t *testing.T, path string, blocks ...*pem.Block) {
	t.Helper()
	var b []byte
	for _, blk := range blocks {
		b = append(b, pem.EncodeToMemory(blk)...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func svidBlocks(t *testing.T, svid *x509svid.SVID) []*pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	blocks := []*pem.Block{{Type: "PRIVATE KEY", Bytes: der}}
	for _, c := range svid.Certificates {
		blocks = append(blocks, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return blocks
}

func newRegistryFixture(t *testing.T) *registryFixture {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for _, e := range []registry.Entry{
		{Service: "users", SPIFFEID: "spiffe://example.org/svc/users", Address: "10.0.0.1:15443", Routes: []string{"/users"}, Labels: map[string]string{"version": "v1"}},
		{Service: "users", SPIFFEID: "spiffe://example.org/svc/users", Address: "10.0.0.2:15443", Routes: []string{"/users"}, Labels: map[string]string{"version": "v2"}, Weight: 10},
		{Service: "web", SPIFFEID: "spiffe://example.org/svc/web", Address: "10.0.0.3:15443"},
	} {
		e.Normalize()
		if _, err := st.Put(ctx, e, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	h, err := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ca.Root().Raw)
	fp := hex.EncodeToString(sum[:])
	mux := http.NewServeMux()
	mux.Handle(registry.PathPrefix, h)
	mux.HandleFunc("GET /root/{fp}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("fp") != fp {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"ca": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root().Raw}))})
	})
	srv := httptest.NewUnstartedServer(mux)
	serverSVID := ca.SVID(spiffeid.RequireFromPath(td, "/ca"), testca.Options{IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{testca.TLSCertificate(serverSVID)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	f := &registryFixture{url: srv.URL, fp: fp, bundle: filepath.Join(dir, "root.pem"), svidFile: filepath.Join(dir, "svid.pem"), dataDir: filepath.Join(dir, "agent")}
	writePEM(t, f.bundle, &pem.Block{Type: "CERTIFICATE", Bytes: ca.Root().Raw})
	writePEM(t, f.svidFile, svidBlocks(t, ca.SVID(spiffeid.RequireFromPath(td, "/svc/web"), testca.Options{}))...)
	if err := os.Mkdir(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(f.dataDir, "svid.pem"), svidBlocks(t, ca.SVID(spiffeid.RequireFromPath(td, "/svc/web"), testca.Options{}))...)
	writePEM(t, filepath.Join(f.dataDir, "bundle.pem"), &pem.Block{Type: "CERTIFICATE", Bytes: ca.Root().Raw})
	return f
}

func testLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

var leaseRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in (1h0m0s|5\dm\d+s)\)$`)

func TestRegistryList(t *testing.T) {
	f := newRegistryFixture(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"bundle and files", []string{"--ca", f.url, "--bundle", f.bundle, "--svid-cert", f.svidFile, "--svid-key", f.svidFile}},
		{"fingerprint", []string{"--ca", f.url, "--ca-fingerprint", strings.ToUpper(f.fp), "--svid-cert", f.svidFile, "--svid-key", f.svidFile}},
		{"agent data dir", []string{"--ca", f.url, "--data-dir", f.dataDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, out, errb := testEnv(nil)
			if code := run(context.Background(), append([]string{"registry", "list"}, tc.args...), env); code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, errb)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 6 {
				t.Fatalf("output:\n%s", out)
			}
			want := [][]string{
				{"SERVICE", "ENDPOINT", "ROUTES", "OWNER", "WEIGHT", "LABELS", "LEASE", "EXPIRES"},
				{"users", "10.0.0.1:15443", "/users", "spiffe://example.org/svc/users", "100", "version=v1"},
				{"users", "10.0.0.2:15443", "/users", "spiffe://example.org/svc/users", "10", "version=v2"},
				{"web", "10.0.0.3:15443", "-", "spiffe://example.org/svc/web", "100", "-"},
			}
			for i, w := range want {
				got := strings.Fields(lines[i])
				if len(got) < len(w) || strings.Join(got[:len(w)], " ") != strings.Join(w, " ") {
					t.Fatalf("line %d = %q, want it to start with %q", i, lines[i], w)
				}
			}
			// The lease was put with an hour; the exact remainder depends on
			// how long the test took, so only its shape is checked.
			if !leaseRE.MatchString(lines[1]) {
				t.Fatalf("no lease expiry in %q", lines[1])
			}
			if lines[5] != "3 endpoints at revision 3" {
				t.Fatalf("summary %q", lines[5])
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		env, out, errb := testEnv(nil)
		if code := run(context.Background(), []string{"registry", "list", "--json", "--ca", f.url, "--data-dir", f.dataDir}, env); code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, errb)
		}
		var snap registry.Snapshot
		if err := json.Unmarshal(out.Bytes(), &snap); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if snap.Revision != 3 || len(snap.Entries) != 3 || snap.Entries[1].Weight != 10 || snap.Entries[0].Expires.IsZero() {
			t.Fatalf("snapshot %+v", snap)
		}
	})
}

func TestRegistryListUsage(t *testing.T) {
	f := newRegistryFixture(t)
	other := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	strangerDir := t.TempDir()
	stranger := filepath.Join(strangerDir, "svid.pem")
	writePEM(t, stranger, svidBlocks(t, other.SVID(spiffeid.RequireFromString("spiffe://example.org/svc/web"), testca.Options{}))...)
	mismatched := filepath.Join(strangerDir, "mismatch.pem")
	a, b := svidBlocks(t, other.SVID(spiffeid.RequireFromString("spiffe://example.org/svc/web"), testca.Options{})), svidBlocks(t, other.SVID(spiffeid.RequireFromString("spiffe://example.org/svc/web"), testca.Options{}))
	writePEM(t, mismatched, a[0], b[1])
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no --ca", []string{"--data-dir", f.dataDir}, 2, "registry list: --ca is required (or set MESHGUARD_CA)"},
		{"http URL", []string{"--ca", "http://127.0.0.1:1", "--data-dir", f.dataDir}, 2, `registry list: --ca "http://127.0.0.1:1": want https://host:port`},
		{"no SVID", []string{"--ca", f.url, "--bundle", f.bundle}, 2, "registry list: the registry needs an SVID: give --svid-cert and --svid-key, or --data-dir of an agent"},
		{"cert without key", []string{"--ca", f.url, "--bundle", f.bundle, "--svid-cert", f.svidFile}, 2, "registry list: give both --svid-cert and --svid-key"},
		{"no trust", []string{"--ca", f.url, "--svid-cert", f.svidFile, "--svid-key", f.svidFile}, 2, "registry list: say how to trust the CA: --bundle FILE, --ca-fingerprint HEX or --data-dir DIR"},
		{"two trusts", []string{"--ca", f.url, "--bundle", f.bundle, "--ca-fingerprint", f.fp, "--data-dir", f.dataDir}, 2, "registry list: give only one of --bundle and --ca-fingerprint"},
		{"bad fingerprint", []string{"--ca", f.url, "--ca-fingerprint", "abc", "--data-dir", f.dataDir}, 2, `registry list: --ca-fingerprint "abc": want the 64 hex digits printed by`},
		{"wrong fingerprint", []string{"--ca", f.url, "--ca-fingerprint", strings.Repeat("ab", 32), "--data-dir", f.dataDir}, 1, "fetch CA root: status 404"},
		{"missing SVID file", []string{"--ca", f.url, "--bundle", f.bundle, "--svid-cert", "/nonexistent", "--svid-key", "/nonexistent"}, 2, "registry list: read SVID: open /nonexistent: no such file or directory"},
		{"key does not match", []string{"--ca", f.url, "--bundle", f.bundle, "--svid-cert", mismatched, "--svid-key", mismatched}, 2, "does not match the certificate"},
		{"SVID of another CA", []string{"--ca", f.url, "--bundle", f.bundle, "--svid-cert", stranger, "--svid-key", stranger}, 1, "list registry:"},
		{"server not trusted", []string{"--ca", f.url, "--bundle", filepath.Join(f.dataDir, "svid.pem"), "--svid-cert", f.svidFile, "--svid-key", f.svidFile}, 1, "certificate signed by unknown authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, errb := testEnv(nil)
			if code := run(context.Background(), append([]string{"registry", "list"}, tc.args...), env); code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, errb)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr %q, want it to contain %q", errb, tc.wantErr)
			}
		})
	}
}
