package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/pemutil"

	"github.com/meshguard/meshguard/internal/svidcheck"
)

// stepCLIModule is the step CLI the compatibility test builds.
const stepCLIModule = "github.com/smallstep/cli/cmd/step@v0.21.0"

// stepBinary finds the real step CLI: $MESHGUARD_STEP_CLI, a copy built
// earlier into the user cache, or a fresh build from the Go module proxy.
func stepBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHGUARD_STEP_CLI"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("step CLI unavailable: no cache directory: %v", err)
	}
	bin := filepath.Join(cache, "meshguard-test", "step-v0.21.0")
	if _, err := os.Stat(filepath.Join(bin, "step")); err == nil {
		return filepath.Join(bin, "step")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", stepCLIModule)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-mod=mod", "GOWORK=off")
	cmd.Dir = t.TempDir() // outside our module
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("step CLI unavailable: go install %s failed (no module proxy?): %v\n%s", stepCLIModule, err, lastLine(string(out)))
	}
	return filepath.Join(bin, "step")
}

// TestStepCLICompatibility drives the real step CLI against the CA: a
// certificate from a meshguard join token, renew and rekey over mTLS, and
// the root fetched by fingerprint.
func TestStepCLICompatibility(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the step CLI")
	}
	step := stepBinary(t)
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	work := t.TempDir()
	rootFile := filepath.Join(dir, RootCertFile)
	crt, key := filepath.Join(work, "svid.crt"), filepath.Join(work, "svid.key")
	const id = "spiffe://example.org/svc/stepped"
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(step, args...)
		cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(work, "steppath"), "HOME="+work)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("step %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	checkFile := func(wantKey []byte) (*x509.Certificate, []byte) {
		t.Helper()
		certs, err := pemutil.ReadCertificateBundle(crt)
		if err != nil {
			t.Fatal(err)
		}
		bundle := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(testTD), []*x509.Certificate{r.root})
		got, _, err := x509svid.Verify(certs, bundle)
		if err != nil || got.String() != id {
			t.Fatalf("step's certificate: ID %s, err %v; want %s", got, err, id)
		}
		if _, err := svidcheck.Leaf(certs[0]); err != nil {
			t.Fatal(err)
		}
		k, _ := os.ReadFile(key)
		if wantKey != nil && !bytes.Equal(k, wantKey) {
			t.Fatal("key file changed")
		}
		return certs[0], k
	}

	run("ca", "certificate", "--token", mustToken(t, dir, id), "--ca-url", r.url, "--root", rootFile, id, crt, key)
	first, k1 := checkFile(nil)

	run("ca", "renew", "--force", "--ca-url", r.url, "--root", rootFile, crt, key)
	renewed, _ := checkFile(k1)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("renew returned the same certificate")
	}

	run("ca", "rekey", "--force", "--ca-url", r.url, "--root", rootFile, crt, key)
	rekeyed, k3 := checkFile(nil)
	if bytes.Equal(k3, k1) || publicKeysEqual(rekeyed.PublicKey, first.PublicKey) {
		t.Fatal("rekey kept the old key")
	}

	fetched := filepath.Join(work, "root.crt")
	run("ca", "root", "--ca-url", r.url, "--fingerprint", Fingerprint(r.root), fetched)
	if got, err := readCert(fetched); err != nil || !got.Equal(r.root) {
		t.Fatalf("step ca root: %v", err)
	}
	if fp := run("certificate", "fingerprint", rootFile); fp != Fingerprint(r.root)+"\n" {
		t.Fatalf("step certificate fingerprint = %q, want %s", fp, Fingerprint(r.root))
	}
}
