package main

import (
	"context"
	"crypto/ecdsa"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/internal/clock"
)

// dirState lists a directory's entries with their sizes, to prove a
// refused command wrote nothing.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "<none>"
	}
	var out []string
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Name()+":"+info.ModTime().String())
	}
	return strings.Join(out, ",")
}

func TestCACommands(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	env, out, errb := testEnv(nil)
	if code := run(context.Background(), []string{"ca", "init", "--dir", caDir, "--trust-domain", "example.org"}, env); code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errb)
	}
	root, err := ca.LoadRoot(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != ca.Fingerprint(root) {
		t.Fatalf("ca init printed %q, want the root fingerprint %s", got, ca.Fingerprint(root))
	}

	// token create through the environment, as MESHGUARD_* variables.
	env, out, errb = testEnv(map[string]string{"MESHGUARD_DIR": caDir, "MESHGUARD_SPIFFE_ID": "spiffe://example.org/svc/web"})
	if code := run(context.Background(), []string{"token", "create", "--ttl", "5m"}, env); code != 0 {
		t.Fatalf("token create: exit %d: %s", code, errb)
	}
	if tok := strings.TrimSpace(out.String()); strings.Count(tok, ".") != 2 {
		t.Fatalf("token create printed %q, want a JWT", tok)
	}

	uninit := t.TempDir()
	corrupt := filepath.Join(t.TempDir(), "ca")
	if code := run(context.Background(), []string{"ca", "init", "--dir", corrupt, "--trust-domain", "example.org"}, env); code != 0 {
		t.Fatal("init corrupt dir")
	}
	if err := os.WriteFile(filepath.Join(corrupt, ca.IntermediateKeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	encrypted := filepath.Join(t.TempDir(), "ca")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := run(context.Background(), []string{"ca", "init", "--dir", encrypted, "--trust-domain", "example.org", "--password-file", pw}, env); code != 0 {
		t.Fatal("init encrypted dir")
	}
	fresh := filepath.Join(t.TempDir(), "new")

	tests := []struct {
		name    string
		args    []string
		dir     string // must be unchanged afterwards
		wantErr string
	}{
		{name: "init bad trust domain", args: []string{"ca", "init", "--dir", fresh, "--trust-domain", "example.org/x"}, dir: fresh,
			wantErr: `trust domain "example.org/x" must be a bare name like example.org`},
		{name: "init malformed trust domain", args: []string{"ca", "init", "--dir", fresh, "--trust-domain", "exa mple.org"}, dir: fresh,
			wantErr: "trust domain characters are limited"},
		{name: "init without trust domain", args: []string{"ca", "init", "--dir", fresh}, dir: fresh, wantErr: "--trust-domain is required"},
		{name: "init over existing CA", args: []string{"ca", "init", "--dir", caDir, "--trust-domain", "example.org"}, dir: caDir,
			wantErr: "already holds a CA (root.crt exists); use --force to replace it"},
		{name: "token for other trust domain", args: []string{"token", "create", "--dir", caDir, "--spiffe-id", "spiffe://evil.org/svc/web"}, dir: caDir,
			wantErr: "SPIFFE ID spiffe://evil.org/svc/web is not in the trust domain example.org"},
		{name: "token without svc path", args: []string{"token", "create", "--dir", caDir, "--spiffe-id", "spiffe://example.org/web"}, dir: caDir,
			wantErr: "must have the form spiffe://example.org/svc/NAME"},
		{name: "token malformed ID", args: []string{"token", "create", "--dir", caDir, "--spiffe-id", "https://example.org/svc/web"}, dir: caDir,
			wantErr: `--spiffe-id "https://example.org/svc/web" is not a SPIFFE ID`},
		{name: "token bad ttl", args: []string{"token", "create", "--dir", caDir, "--spiffe-id", "spiffe://example.org/svc/web", "--ttl", "-1m"}, dir: caDir,
			wantErr: "--ttl -1m0s out of range"},
		{name: "token from uninitialised dir", args: []string{"token", "create", "--dir", uninit, "--spiffe-id", "spiffe://example.org/svc/web"}, dir: uninit,
			wantErr: "is not an initialised CA directory"},
		{name: "serve uninitialised dir", args: []string{"ca", "serve", "--dir", uninit, "--listen", "127.0.0.1:0"}, dir: uninit,
			wantErr: "is not an initialised CA directory (ca.json is missing); run `meshguard ca init"},
		{name: "serve missing dir", args: []string{"ca", "serve", "--dir", fresh, "--listen", "127.0.0.1:0"}, dir: fresh,
			wantErr: "does not exist; run `meshguard ca init"},
		{name: "serve unreadable key", args: []string{"ca", "serve", "--dir", corrupt, "--listen", "127.0.0.1:0"}, dir: corrupt,
			wantErr: "read key " + filepath.Join(corrupt, ca.IntermediateKeyFile)},
		{name: "serve encrypted without password", args: []string{"ca", "serve", "--dir", encrypted, "--listen", "127.0.0.1:0"}, dir: encrypted,
			wantErr: "the CA keys are encrypted; give --password-file"},
		{name: "serve bad ttl", args: []string{"ca", "serve", "--dir", caDir, "--svid-ttl", "1s"}, dir: caDir,
			wantErr: "svid ttl 1s out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := dirState(t, tc.dir)
			env, out, errb := testEnv(nil)
			if code := run(context.Background(), tc.args, env); code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, errb)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr = %q, want it to contain %q", errb, tc.wantErr)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout = %q, want nothing", out)
			}
			if after := dirState(t, tc.dir); after != before {
				t.Fatalf("directory changed:\n%s\n->\n%s", before, after)
			}
		})
	}
}

// TestCAWithIdentityClient runs the agent's real CA client (identity's
// CASource) against the real CA server on loopback: bootstrap with a join
// token, a rotation (rekey over mTLS) driven by the agent's fake clock, and
// the replayed token refused for a second agent.
func TestCAWithIdentityClient(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	fp, err := ca.Init(ca.InitConfig{Dir: dir, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.NewServer(ca.Config{Dir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ca Run: %v", err)
		}
	})
	<-srv.Ready()
	url := "https://" + srv.Addr().String()
	id := spiffeid.RequireFromString("spiffe://example.org/svc/web")
	tok, err := ca.CreateToken(dir, id, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	clk := clock.NewFake(time.Now())
	agent, err := identity.NewCASource(identity.CAConfig{URL: url, Fingerprint: fp, Token: tok, Service: "web", Clock: clk, Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Bootstrap(ctx); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	first, err := agent.GetX509SVID()
	if err != nil || first.ID != id {
		t.Fatalf("SVID %v, %v; want %s", first, err, id)
	}

	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(agentCtx) }()
	defer func() {
		stopAgent()
		<-agentDone
	}()
	changed := agent.Changed()
	// Wait until Run sleeps on the clock, then jump past the rotation time.
	deadline := time.Now().Add(10 * time.Second)
	for clk.Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("agent never waited for its rotation time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	clk.Advance(agent.Status().NextRotation.Sub(clk.Now()) + time.Second)
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatalf("no rotation; status %+v", agent.Status())
	}
	second, err := agent.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != id || second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("rotation gave %s serial %s", second.ID, second.Certificates[0].SerialNumber)
	}
	if pub, ok := second.Certificates[0].PublicKey.(*ecdsa.PublicKey); !ok || pub.Equal(first.Certificates[0].PublicKey) {
		t.Fatal("rotation kept the old key (want rekey)")
	}

	// The token is spent: a second agent with it is refused for good.
	other, err := identity.NewCASource(identity.CAConfig{URL: url, Fingerprint: fp, Token: tok, Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Bootstrap(ctx); err == nil || !strings.Contains(err.Error(), "the token was already used") {
		t.Fatalf("replayed token: %v", err)
	}
}
