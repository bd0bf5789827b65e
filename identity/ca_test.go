package identity_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/internal/clock"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// These tests run the agent's identity against the real meshguard CA
// (smallstep's authority behind ca.Server) on loopback with real TLS.

var webID = spiffeid.RequireFromString("spiffe://example.org/svc/web")

type realCA struct {
	dir, fingerprint string
	addr             string
	stop             func()
}

// newRealCA initialises a CA directory and serves it on 127.0.0.1:0.
func newRealCA(t *testing.T) *realCA {
	t.Helper()
	dir := t.TempDir()
	fp, err := ca.Init(ca.InitConfig{Dir: dir, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	c := &realCA{dir: dir, fingerprint: fp}
	c.start(t, "127.0.0.1:0")
	return c
}

// start serves the CA directory on listen until stop or the test's end.
func (c *realCA) start(t *testing.T, listen string) {
	t.Helper()
	srv, err := ca.NewServer(ca.Config{Dir: c.dir, Listen: listen, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
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
		t.Fatalf("CA stopped before ready: %v", err)
	}
	c.addr = srv.Addr().String()
	stopped := false
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("CA Run: %v", err)
		}
	}
	t.Cleanup(c.stop)
}

func (c *realCA) url() string { return "https://" + c.addr }

func (c *realCA) token(t *testing.T, id spiffeid.ID) string {
	t.Helper()
	tok, err := ca.CreateToken(c.dir, id, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type agentOpts struct {
	token, service, dir, fp string
	clk                     *clock.Fake
	minBackoff              time.Duration
}

func newAgent(t *testing.T, c *realCA, o agentOpts) *identity.CASource {
	t.Helper()
	if o.service == "" {
		o.service = "web"
	}
	if o.fp == "" {
		o.fp = c.fingerprint
	}
	if o.clk == nil {
		o.clk = clock.NewFake(time.Now())
	}
	if o.minBackoff == 0 {
		o.minBackoff = time.Second
	}
	src, err := identity.NewCASource(identity.CAConfig{
		URL: c.url(), Fingerprint: o.fp, Token: o.token, Service: o.service, DataDir: o.dir,
		Clock: o.clk, Rand: func() float64 { return 0.5 },
		MinBackoff: o.minBackoff, MaxBackoff: time.Minute, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func run(t *testing.T, src *identity.CASource) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRealCABootstrapAndRenewal(t *testing.T) {
	c := newRealCA(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	src := newAgent(t, c, agentOpts{token: c.token(t, webID), dir: dir, clk: clk})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, err := src.GetX509SVID()
	if err != nil || first.ID != webID {
		t.Fatalf("SVID = %v, %v", first, err)
	}
	if _, _, err := x509svid.Verify(first.Certificates, src); err != nil {
		t.Fatalf("SVID does not verify against the pinned bundle: %v", err)
	}
	if got := identity.Fingerprint(first.Certificates[len(first.Certificates)-1]); got == c.fingerprint {
		t.Fatal("the chain carries the root; want leaf and intermediate only")
	}

	// Renewal over mTLS at the rotation time, with a new key.
	changed := src.Changed()
	run(t, src)
	waitFor(t, "the rotation wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(src.Status().NextRotation)
	waitFor(t, "the renewal", func() bool { return src.Status().Rotations >= 1 })
	<-changed
	second, _ := src.GetX509SVID()
	if second.ID != webID || second.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("renewal did not produce a new SVID for the same ID")
	}
	if second.Certificates[0].PublicKey.(*ecdsa.PublicKey).Equal(first.Certificates[0].PublicKey) {
		t.Fatal("renewal kept the old key")
	}
	if err := src.Ready(); err != nil {
		t.Fatal(err)
	}
}

func TestRealCARefusals(t *testing.T) {
	c := newRealCA(t)
	other := newRealCA(t)

	used := c.token(t, webID)
	if err := newAgent(t, c, agentOpts{token: used}).Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    agentOpts
		wantErr string
	}{
		{name: "token replay", opts: agentOpts{token: used}, wantErr: "sign SVID with join token: CA answered 401 Unauthorized: the token was already used"},
		{name: "token for another ID", opts: agentOpts{token: c.token(t, webID), service: "admin"}, wantErr: "CA answered 403 Forbidden: The request was forbidden by the certificate authority: certificate request does not contain the valid URIs - got [spiffe://example.org/svc/admin], want [spiffe://example.org/svc/web]"},
		{name: "token from another CA", opts: agentOpts{token: other.token(t, webID)}, wantErr: "sign SVID with join token: CA answered 401"},
		{name: "wrong fingerprint", opts: agentOpts{token: c.token(t, webID), fp: other.fingerprint}, wantErr: "fetch CA root: CA answered 404 Not Found: root certificate with fingerprint"},
		{name: "garbage token", opts: agentOpts{token: "not-a-token"}, wantErr: "sign SVID with join token: CA answered 401 Unauthorized: token is not a JWT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.dir = t.TempDir()
			src := newAgent(t, c, tc.opts)
			err := src.Bootstrap(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if _, err := os.Stat(filepath.Join(tc.opts.dir, "svid.pem")); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("an SVID was persisted after a refusal")
			}
		})
	}
}

func TestRealCAOutage(t *testing.T) {
	c := newRealCA(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	src := newAgent(t, c, agentOpts{token: c.token(t, webID), dir: dir, clk: clk, minBackoff: time.Millisecond})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, _ := src.GetX509SVID()
	c.stop()
	run(t, src)

	waitFor(t, "the rotation wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(src.Status().NextRotation)
	waitFor(t, "a failed renewal", func() bool { return src.Status().LastError != "" })
	if got, _ := src.GetX509SVID(); got != first || src.Ready() != nil {
		t.Fatal("the agent dropped its SVID while the CA is down")
	}

	// The CA comes back on the same directory and port.
	c.start(t, c.addr)
	waitFor(t, "the retry wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(src.Status().NextRotation)
	waitFor(t, "the renewal after the outage", func() bool { return src.Status().Rotations >= 1 })
	if got, _ := src.GetX509SVID(); got.Certificates[0].Equal(first.Certificates[0]) || src.Status().LastError != "" {
		t.Fatalf("not renewed after the CA returned: %+v", src.Status())
	}
}

func TestRealCAExpiredNotRenewed(t *testing.T) {
	c := newRealCA(t)
	clk := clock.NewFake(time.Now())
	src := newAgent(t, c, agentOpts{token: c.token(t, webID), clk: clk})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	svid, _ := src.GetX509SVID()
	c.stop()
	run(t, src)
	waitFor(t, "the rotation wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(svid.Certificates[0].NotAfter.Add(time.Second))
	waitFor(t, "a failed renewal", func() bool { return src.Status().LastError != "" })
	err := src.Ready()
	if err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("Ready after expiry = %v", err)
	}
}

func TestRealCARestartWithoutToken(t *testing.T) {
	c := newRealCA(t)
	dir := t.TempDir()
	first := newAgent(t, c, agentOpts{token: c.token(t, webID), dir: dir})
	if err := first.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, _ := first.GetX509SVID()

	// Restart: no token; the persisted SVID is used, then renewed over mTLS.
	clk := clock.NewFake(time.Now())
	second := newAgent(t, c, agentOpts{dir: dir, clk: clk})
	if err := second.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := second.GetX509SVID(); !got.Certificates[0].Equal(before.Certificates[0]) {
		t.Fatal("restart did not reuse the persisted SVID")
	}
	run(t, second)
	waitFor(t, "the rotation wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(second.Status().NextRotation)
	waitFor(t, "the renewal", func() bool { return second.Status().Rotations >= 1 })
}

func TestRealCARequestedTTL(t *testing.T) {
	c := newRealCA(t)
	src, err := identity.NewCASource(identity.CAConfig{
		URL: c.url(), Fingerprint: c.fingerprint, Token: c.token(t, webID), Service: "web", TTL: 20 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	svid, _ := src.GetX509SVID()
	leaf := svid.Certificates[0]
	if left := time.Until(leaf.NotAfter); left > 21*time.Minute || left < 19*time.Minute {
		t.Fatalf("SVID valid for another %s, want about the 20m asked for", left)
	}
}
