package ca

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestInitWritesCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	fp, err := Init(InitConfig{Dir: dir, TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	root, err := LoadRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fp != Fingerprint(root) || len(fp) != 64 || strings.ToLower(fp) != fp || strings.Contains(fp, ":") {
		t.Fatalf("fingerprint %q: want lowercase hex SHA-256 of the root", fp)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, want 0700", st.Mode().Perm())
	}
	for _, name := range []string{RootKeyFile, IntermediateKeyFile, ProvisionerKeyFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, st.Mode().Perm())
		}
	}
	for _, name := range []string{RootKeyFile, IntermediateKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if block, _ := pem.Decode(b); block == nil || block.Type != "PRIVATE KEY" {
			t.Errorf("%s is not an unencrypted PKCS#8 PEM key", name)
		}
	}

	inter, err := readCert(filepath.Join(dir, IntermediateCertFile))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		life time.Duration
	}{
		{name: "root", cert: root, life: RootLifetime},
		{name: "intermediate", cert: inter, life: IntermediateLifetime},
	}
	for _, tc := range tests {
		c := tc.cert
		if !c.IsCA || len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("%s: IsCA=%v URIs=%v, want a CA with URI SAN spiffe://example.org", tc.name, c.IsCA, c.URIs)
		}
		if got := c.NotAfter.Sub(c.NotBefore); got != tc.life {
			t.Errorf("%s lifetime = %s, want %s", tc.name, got, tc.life)
		}
		if c.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("%s key = %v, want ECDSA", tc.name, c.PublicKeyAlgorithm)
		}
	}
	if len(inter.PermittedURIDomains) != 1 || inter.PermittedURIDomains[0] != testTD || !inter.PermittedDNSDomainsCritical {
		t.Errorf("intermediate name constraints = %v (critical %v), want [example.org] critical", inter.PermittedURIDomains, inter.PermittedDNSDomainsCritical)
	}
	if !inter.MaxPathLenZero {
		t.Error("intermediate may sign other CAs")
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Error(err)
	}
	if td, err := LoadTrustDomain(dir); err != nil || td.Name() != testTD {
		t.Errorf("LoadTrustDomain = %v, %v", td, err)
	}
}

func TestInitRefusals(t *testing.T) {
	existing := newCADir(t)
	badPassword := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(badPassword, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     InitConfig
		wantErr string
	}{
		{name: "empty trust domain", cfg: InitConfig{Dir: t.TempDir() + "/x"}, wantErr: "init ca: trust domain is empty"},
		{name: "scheme", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: "spiffe://example.org"}, wantErr: `must be a bare name like example.org`},
		{name: "path", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: "example.org/x"}, wantErr: "must be a bare name"},
		{name: "upper case", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: "Example.org"}, wantErr: "trust domain characters are limited"},
		{name: "empty label", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: "example..org"}, wantErr: "has an empty label"},
		{name: "existing CA", cfg: InitConfig{Dir: existing, TrustDomain: testTD}, wantErr: "already holds a CA (root.crt exists); use --force"},
		{name: "empty password", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: testTD, PasswordFile: badPassword}, wantErr: "is empty"},
		{name: "missing password file", cfg: InitConfig{Dir: t.TempDir() + "/x", TrustDomain: testTD, PasswordFile: "/nonexistent/pw"}, wantErr: "read password file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := listDir(t, tc.cfg.Dir)
			var rootBefore []byte
			if before != "" {
				rootBefore, _ = os.ReadFile(filepath.Join(tc.cfg.Dir, RootCertFile))
			}
			_, err := Init(tc.cfg)
			var ce *ConfigError
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !asConfigError(err, &ce) {
				t.Fatalf("err = %v, want ConfigError containing %q", err, tc.wantErr)
			}
			if after := listDir(t, tc.cfg.Dir); after != before {
				t.Fatalf("directory changed: %q -> %q", before, after)
			}
			if before != "" {
				if rootAfter, _ := os.ReadFile(filepath.Join(tc.cfg.Dir, RootCertFile)); string(rootAfter) != string(rootBefore) {
					t.Fatal("root certificate was rewritten")
				}
			}
		})
	}
}

func TestInitForceReplaces(t *testing.T) {
	dir := newCADir(t)
	old, _ := LoadRoot(dir)
	r := startServer(t, dir, nil) // creates the database
	r.stop()
	if _, err := os.Stat(filepath.Join(dir, DBFile)); err != nil {
		t.Fatalf("no database after serving: %v", err)
	}
	fp, err := Init(InitConfig{Dir: dir, TrustDomain: "other.org", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := LoadRoot(dir)
	if fp == Fingerprint(old) || fp != Fingerprint(root) {
		t.Fatal("--force did not replace the root")
	}
	if _, err := os.Stat(filepath.Join(dir, DBFile)); !os.IsNotExist(err) {
		t.Fatalf("old database kept: %v", err)
	}
}

func TestPasswordProtectedCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	pw := filepath.Join(t.TempDir(), "pw")
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(InitConfig{Dir: dir, TrustDomain: testTD, PasswordFile: pw}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{RootKeyFile, IntermediateKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if block, _ := pem.Decode(b); block == nil || block.Type != "ENCRYPTED PRIVATE KEY" {
			t.Errorf("%s is not encrypted", name)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ProvisionerKeyFile)); strings.Contains(string(b), `"d"`) {
		t.Error("provisioner key stored in clear")
	}
	id := spiffeid.RequireFromString("spiffe://example.org/svc/pw")
	refusals := []struct {
		name    string
		pwFile  string
		wantErr string
	}{
		{name: "no password", wantErr: "the CA keys are encrypted; give --password-file"},
		{name: "wrong password", pwFile: wrong, wantErr: "read key"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewServer(Config{Dir: dir, PasswordFile: tc.pwFile}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewServer err = %v, want %q", err, tc.wantErr)
			}
			if _, err := NewToken(TokenConfig{Dir: dir, ID: id, TTL: time.Minute, PasswordFile: tc.pwFile}); err == nil {
				t.Fatal("NewToken succeeded")
			}
		})
	}
	tok, err := NewToken(TokenConfig{Dir: dir, ID: id, TTL: time.Minute, PasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	r := startServer(t, dir, func(c *Config) { c.PasswordFile = pw })
	if code, _, raw := r.signWith(t, tok, newKey(t), id.String()); code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
}

func TestNewTokenRefusals(t *testing.T) {
	dir := newCADir(t)
	tests := []struct {
		name    string
		id      string
		ttl     time.Duration
		wantErr string
	}{
		{name: "other trust domain", id: "spiffe://evil.org/svc/a", ttl: time.Minute, wantErr: "create token: SPIFFE ID spiffe://evil.org/svc/a is not in the trust domain example.org"},
		{name: "trust domain ID", id: "spiffe://example.org", ttl: time.Minute, wantErr: "must have the form spiffe://example.org/svc/NAME"},
		{name: "no svc", id: "spiffe://example.org/web", ttl: time.Minute, wantErr: "must have the form spiffe://example.org/svc/NAME"},
		{name: "nested", id: "spiffe://example.org/svc/a/b", ttl: time.Minute, wantErr: "must have the form spiffe://example.org/svc/NAME"},
		{name: "zero ttl", id: "spiffe://example.org/svc/a", wantErr: "create token: ttl 0s out of range"},
		{name: "huge ttl", id: "spiffe://example.org/svc/a", ttl: 48 * time.Hour, wantErr: "create token: ttl 48h0m0s out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewToken(TokenConfig{Dir: dir, ID: spiffeid.RequireFromString(tc.id), TTL: tc.ttl})
			var ce *ConfigError
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) && !strings.Contains(err.Error(), tc.wantErr) || !asConfigError(err, &ce) {
				t.Fatalf("err = %v, want ConfigError %q", err, tc.wantErr)
			}
		})
	}
	if _, err := CreateToken(t.TempDir(), spiffeid.RequireFromString("spiffe://example.org/svc/a"), time.Minute); err == nil ||
		!strings.Contains(err.Error(), "is not an initialised CA directory") {
		t.Fatalf("token from empty dir: %v", err)
	}
}

func TestParseServerSANs(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		listen  string
		extra   []string
		want    string
		wantErr string
	}{
		{listen: "127.0.0.1:8443", want: "127.0.0.1"},
		{listen: "ca.example.org:8443", extra: []string{"10.0.0.1", "ca"}, want: "ca.example.org,ca,10.0.0.1"},
		{listen: "[::1]:8443", want: "::1"},
		{listen: ":8443", want: strings.TrimSuffix("localhost,"+host, ",") + ",127.0.0.1,::1"}, // and the interface addresses
		{listen: "nope", wantErr: `listen address "nope"`},
		{listen: "127.0.0.1:1", extra: []string{"a/b"}, wantErr: `server name "a/b" is neither`},
	}
	for _, tc := range tests {
		t.Run(tc.listen, func(t *testing.T) {
			s, err := parseServerSANs(tc.listen, tc.extra)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(s.names(), ","); got != tc.want && !strings.HasPrefix(got, tc.want+",") {
				t.Fatalf("names = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServeAndTokenWithoutOfflineKeys(t *testing.T) {
	dir := newCADir(t)
	tok := mustToken(t, dir, "spiffe://example.org/svc/offline")
	// The root key goes offline after init; the provisioner key may live
	// only where tokens are minted.
	for _, name := range []string{RootKeyFile, ProvisionerKeyFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	r := startServer(t, dir, nil)
	if code, _, raw := r.signWith(t, tok, newKey(t), "spiffe://example.org/svc/offline"); code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	if _, err := CreateToken(dir, spiffeid.RequireFromString("spiffe://example.org/svc/x"), time.Minute); err == nil ||
		!strings.Contains(err.Error(), "(provisioner.key is missing)") {
		t.Fatalf("token without provisioner key: %v", err)
	}
}
