package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestIdentityRotationThroughWorkloadAPI runs `ca serve` with a 10s SVID
// TTL and an agent serving the Workload API; go-spiffe's X509Source (a real
// SPIFFE client) gets the SVID, verifies it against the served bundle, sees
// rotations pushed, and /readyz fails once the CA is gone and the SVID
// expires.
func TestIdentityRotationThroughWorkloadAPI(t *testing.T) {
	needBinary(t)
	caDir := filepath.Join(t.TempDir(), "ca")
	out, stderr, code := runCmd(t, nil, "ca", "init", "--dir", caDir, "--trust-domain", "example.org")
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, stderr)
	}
	fp := strings.TrimSpace(out)
	caAddr := freeAddr(t)
	caProc := start(t, "ca", nil, "ca", "serve", "--dir", caDir, "--listen", caAddr, "--svid-ttl", "10s")
	eventually(t, 20*time.Second, "the CA listens", func() error {
		c, err := net.Dial("tcp", caAddr)
		if err == nil {
			c.Close()
		}
		return err
	})
	tok, stderr, code := runCmd(t, nil, "token", "create", "--dir", caDir, "--spiffe-id", "spiffe://example.org/svc/web")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, stderr)
	}

	sockDir, err := os.MkdirTemp("", "e2e-wl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "workload.sock")
	adminAddr := freeAddr(t)
	// The token goes through the environment, as an operator would keep it
	// off the command line.
	start(t, "agent", []string{"MESHGUARD_TOKEN=" + strings.TrimSpace(tok)},
		"agent", "--ca", "https://"+caAddr, "--ca-fingerprint", fp, "--service", "web",
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--workload-socket", sock, "--admin", adminAddr, "--inbound", freeAddr(t), "--outbound", freeAddr(t))

	readyz := func() (int, error) {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	eventually(t, 20*time.Second, "the agent is ready", func() error {
		if c, err := readyz(); err != nil || c != 200 {
			return fmt.Errorf("readyz %d %v", c, err)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	xs, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	first, err := xs.GetX509SVID()
	if err != nil || first.ID.String() != "spiffe://example.org/svc/web" {
		t.Fatalf("SVID %v, %v", first, err)
	}
	if _, _, err := x509svid.Verify(first.Certificates, xs); err != nil {
		t.Fatalf("SVID does not verify against the served bundle: %v", err)
	}
	eventually(t, 30*time.Second, "a rotated SVID is pushed", func() error {
		s, err := xs.GetX509SVID()
		if err != nil {
			return err
		}
		if s.Certificates[0].Equal(first.Certificates[0]) {
			return fmt.Errorf("still the first SVID (serial %s)", s.Certificates[0].SerialNumber)
		}
		if _, _, err := x509svid.Verify(s.Certificates, xs); err != nil {
			return err
		}
		return nil
	})
	status, stderr, code := runCmd(t, nil, "status", "--admin", adminAddr)
	if code != 0 || !strings.Contains(status, "spiffe://example.org/svc/web") || strings.Contains(status, "rotations:       0") {
		t.Fatalf("status: exit %d\n%s\n%s", code, status, stderr)
	}

	// The CA goes away: the agent keeps serving until the SVID expires,
	// then reports not ready.
	caProc.stop(10 * time.Second)
	eventually(t, 30*time.Second, "/readyz fails after expiry", func() error {
		if c, err := readyz(); err != nil || c != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz %d %v", c, err)
		}
		return nil
	})
}
