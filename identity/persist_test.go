package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestPersistRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org")).Intermediate()
	svid := ca.SVID(spiffeid.RequireFromString("spiffe://example.org/svc/web"), testca.Options{})
	if err := saveSVID(dir, svid); err != nil {
		t.Fatal(err)
	}
	if err := saveBundle(dir, ca.Bundle().X509Authorities()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{svidFile, bundleFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %o, want 600", f, fi.Mode().Perm())
		}
	}
	got, err := loadSVID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != svid.ID || len(got.Certificates) != 2 || !got.Certificates[0].Equal(svid.Certificates[0]) {
		t.Fatalf("loaded SVID %s with %d certificates differs from the saved one", got.ID, len(got.Certificates))
	}
	roots, err := loadBundle(dir)
	if err != nil || len(roots) != 1 || !roots[0].Equal(ca.Root()) {
		t.Fatalf("loadBundle = %v, %v", roots, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("data dir holds %d entries, want 2 (no temporary files left)", len(entries))
	}
}

func TestLoadSVIDErrors(t *testing.T) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	id := spiffeid.RequireFromString("spiffe://example.org/svc/web")
	good := ca.SVID(id, testca.Options{})
	other := ca.SVID(id, testca.Options{})
	goodDir := t.TempDir()
	if err := saveSVID(goodDir, good); err != nil {
		t.Fatal(err)
	}
	goodBytes, _ := os.ReadFile(filepath.Join(goodDir, svidFile))
	otherDir := t.TempDir()
	if err := saveSVID(otherDir, other); err != nil {
		t.Fatal(err)
	}
	otherBytes, _ := os.ReadFile(filepath.Join(otherDir, svidFile))
	keyOnly := goodBytes[:strings.Index(string(goodBytes), "-----BEGIN CERTIFICATE")]
	certsOnly := goodBytes[len(keyOnly):]
	otherKey := otherBytes[:strings.Index(string(otherBytes), "-----BEGIN CERTIFICATE")]

	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{name: "garbage", content: []byte("not a pem file"), wantErr: "not PEM (corrupt file?)"},
		{name: "truncated", content: goodBytes[:len(goodBytes)-40], wantErr: "not PEM (corrupt file?)"},
		{name: "no key", content: certsOnly, wantErr: "no private key"},
		{name: "no certificate", content: keyOnly, wantErr: "no certificate"},
		{name: "someone else's key", content: append(append([]byte{}, otherKey...), certsOnly...), wantErr: "the key does not match the certificate"},
		{name: "two keys", content: append(append(append([]byte{}, keyOnly...), keyOnly...), certsOnly...), wantErr: "more than one private key"},
		{name: "foreign block", content: []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"), wantErr: `unexpected PEM block "RSA PRIVATE KEY"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, svidFile), tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadSVID(dir)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	if _, err := loadSVID(t.TempDir()); err != errNotPersisted {
		t.Fatalf("empty dir: err = %v, want errNotPersisted", err)
	}
}

func TestParseFingerprint(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "lower", in: hex, want: hex},
		{name: "upper with colons", in: strings.ToUpper(strings.Repeat("AB:", 31) + "AB"), want: hex},
		{name: "spaces trimmed", in: " " + hex + "\n", want: hex},
		{name: "short", in: "abcd", wantErr: "want the 64 hex digits"},
		{name: "not hex", in: strings.Repeat("zz", 32), wantErr: "not hexadecimal"},
		{name: "empty", in: "", wantErr: "want the 64 hex digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFingerprint(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseFingerprint = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
