package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/registry"
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
	unreadable := filepath.Join(t.TempDir(), "ca")
	if code := run(context.Background(), []string{"ca", "init", "--dir", unreadable, "--trust-domain", "example.org"}, env); code != 0 {
		t.Fatal("init unreadable dir")
	}
	if err := os.Chmod(filepath.Join(unreadable, ca.IntermediateKeyFile), 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		args        []string
		dir         string // must be unchanged afterwards
		wantErr     string
		needNonRoot bool // root reads any file
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
		{name: "serve key without read permission", args: []string{"ca", "serve", "--dir", unreadable, "--listen", "127.0.0.1:0"}, dir: unreadable,
			wantErr: "permission denied", needNonRoot: true},
		{name: "serve encrypted without password", args: []string{"ca", "serve", "--dir", encrypted, "--listen", "127.0.0.1:0"}, dir: encrypted,
			wantErr: "the CA keys are encrypted; give --password-file"},
		{name: "serve bad store", args: []string{"ca", "serve", "--dir", caDir, "--store", "redis://x"}, dir: caDir,
			wantErr: `--store "redis://x": want empty (embedded store) or etcd://`},
		{name: "serve bad listen", args: []string{"ca", "serve", "--dir", caDir, "--listen", "localhost"}, dir: caDir,
			wantErr: `listen address "localhost"`},
		{name: "serve bad ttl", args: []string{"ca", "serve", "--dir", caDir, "--svid-ttl", "1s"}, dir: caDir,
			wantErr: "svid ttl 1s out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needNonRoot && os.Geteuid() == 0 {
				t.Skip("running as root: file permissions do not stop reads (the corrupt-key case covers unreadable keys)")
			}
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

// TestCAServeHostsRegistry runs `meshguard ca serve` as main runs it: the
// CA and the registry API on one TLS listener. An agent identity from a
// join token registers itself over mTLS and lists the registry.
func TestCAServeHostsRegistry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	fp, err := ca.Init(ca.InitConfig{Dir: dir, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	url, stop := startCAServe(t, dir)
	ctx := context.Background()
	root, err := ca.LoadRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer plain.CloseIdleConnections()

	id := spiffeid.RequireFromString("spiffe://example.org/svc/web")
	tok, err := ca.CreateToken(dir, id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := identity.NewCASource(identity.CAConfig{URL: url, Fingerprint: fp, Token: tok, Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	svid, err := agent.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	mtls := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	defer mtls.CloseIdleConnections()
	rc, err := registry.NewClient(mtls, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Register(ctx, registry.Registration{Service: "web", SPIFFEID: id.String(), Address: "127.0.0.1:15443", Routes: []string{"/web"}}); err != nil {
		t.Fatalf("register: %v", err)
	}
	snap, err := rc.List(ctx)
	if err != nil || len(snap.Entries) != 1 || snap.Entries[0].SPIFFEID != id.String() {
		t.Fatalf("list: %+v, %v", snap, err)
	}
	// Without a client certificate the registry refuses.
	anon, _ := registry.NewClient(plain, url)
	if _, err := anon.List(ctx); err == nil {
		t.Fatal("anonymous list succeeded")
	}

	stop()
	if _, err := os.Stat(filepath.Join(dir, registryDBFile)); err != nil {
		t.Fatalf("embedded registry store: %v", err)
	}
}

// startCAServe runs `meshguard ca serve --dir dir [extra...]` in process on
// a free loopback port until the returned stop (or the test's end), once
// /health answers.
func startCAServe(t *testing.T, dir string, extra ...string) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	env, _, errb := testEnv(nil)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"ca", "serve", "--dir", dir, "--listen", addr}, extra...), env)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("ca serve exited %d: %s", code, errb)
			}
		})
	}
	t.Cleanup(stop)
	root, err := ca.LoadRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	url = "https://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, stop
			}
		}
		select {
		case code := <-done:
			t.Fatalf("ca serve exited %d: %s", code, errb)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ca serve not healthy: %v; stderr: %s", err, errb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startEtcd runs a real single-member etcd in process for one test.
func startEtcd(t *testing.T) []string {
	t.Helper()
	free := func() url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return url.URL{Scheme: "http", Host: l.Addr().String()}
	}
	client, peer := free(), free()
	cfg := embed.NewConfig()
	cfg.Name = "meshguard-ca-test"
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready")
	}
	return []string{client.String()}
}

// TestTokenSingleUseAcrossReplicas runs two `ca serve` replicas of one CA
// sharing a real etcd (--store etcd://): a token redeemed at one is
// refused at the other, although each has its own database.
func TestTokenSingleUseAcrossReplicas(t *testing.T) {
	endpoints := startEtcd(t)
	store := "etcd://" + strings.TrimPrefix(endpoints[0], "http://")

	// The ledger alone: first use wins, atomically, per ID.
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	l := &etcdLedger{cli: cli, prefix: "/test/", now: time.Now}
	ctx := context.Background()
	for i, tc := range []struct {
		id   string
		want bool
	}{{"a", true}, {"a", false}, {"b", true}, {"a", false}} {
		if got, err := l.Use(ctx, tc.id, time.Now().Add(time.Minute)); err != nil || got != tc.want {
			t.Fatalf("use %d (%s) = %v, %v; want %v", i, tc.id, got, err, tc.want)
		}
	}

	dirA := filepath.Join(t.TempDir(), "ca")
	fp, err := ca.Init(ca.InitConfig{Dir: dirA, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	dirB := t.TempDir()
	for _, name := range []string{ca.ConfigFile, ca.RootCertFile, ca.IntermediateCertFile, ca.IntermediateKeyFile} {
		b, err := os.ReadFile(filepath.Join(dirA, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	urlA, _ := startCAServe(t, dirA, "--store", store)
	urlB, _ := startCAServe(t, dirB, "--store", store)
	tok, err := ca.CreateToken(dirA, spiffeid.RequireFromString("spiffe://example.org/svc/web"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := func(url string) error {
		src, err := identity.NewCASource(identity.CAConfig{URL: url, Fingerprint: fp, Token: tok, Service: "web"})
		if err != nil {
			t.Fatal(err)
		}
		return src.Bootstrap(ctx)
	}
	if err := bootstrap(urlA); err != nil {
		t.Fatalf("replica A: %v", err)
	}
	if err := bootstrap(urlB); err == nil || !strings.Contains(err.Error(), "the token was already used") {
		t.Fatalf("replica B accepted a token used at A: %v", err)
	}
}
