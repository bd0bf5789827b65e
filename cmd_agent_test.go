package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/identity/workload"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/proxy"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func TestAgentBadFlags(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	ca := []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token", "tok", "--service", "web"}
	with := func(extra ...string) []string { return append(append([]string{}, ca...), extra...) }
	emptyFile := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(emptyFile, []byte(" \n"), 0o600)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	tests := []struct {
		name    string
		args    []string
		vars    map[string]string
		wantErr string
	}{
		{name: "nothing", args: []string{"agent"}, wantErr: "--ca is required"},
		{name: "http CA", args: []string{"agent", "--ca", "http://ca:8443", "--ca-fingerprint", fp, "--token", "t", "--service", "web"}, wantErr: `--ca "http://ca:8443": want https://HOST:PORT`},
		{name: "no fingerprint", args: []string{"agent", "--ca", "https://ca:8443", "--token", "t", "--service", "web"}, wantErr: "--ca-fingerprint is required (or set MESHGUARD_CA_FINGERPRINT)"},
		{name: "short fingerprint", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", "abcd", "--token", "t", "--service", "web"}, wantErr: "want the 64 hex digits"},
		{name: "no token, no data dir", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--service", "web"}, wantErr: "--token or --token-file is required"},
		{name: "token and token file", args: with("--token-file", emptyFile), wantErr: "give --token or --token-file, not both"},
		{name: "empty token file", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token-file", emptyFile, "--service", "web"}, wantErr: "is empty"},
		{name: "missing token file", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token-file", "/nonexistent/tok", "--service", "web"}, wantErr: "--token-file: open /nonexistent/tok"},
		{name: "token with space", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token", "a b", "--service", "web"}, wantErr: "contains whitespace"},
		{name: "no service", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token", "t"}, wantErr: "--service is required"},
		{name: "route with dot segment", args: with("--route", "/api/../admin"), wantErr: `--route "/api/../admin": invalid route`},
		{name: "route with escape", args: with("--route", "/a%2Fb"), wantErr: `--route "/a%2Fb": invalid route`},
		{name: "bad app protocol", args: with("--app-protocol", "h3"), wantErr: `--app-protocol "h3": want http1 or h2c`},
		{name: "tiny max header bytes", args: with("--max-header-bytes", "10"), wantErr: "--max-header-bytes 10 out of range"},
		{name: "negative cpus", args: with("--cpus", "-1"), wantErr: "--cpus -1 out of range (0..1024; 0 uses all)"},
		{name: "cpus not a number", args: with("--cpus", "two"), wantErr: `invalid value "two" for flag -cpus`},
		{name: "negative gc headroom", args: with("--gc-headroom", "-1"), wantErr: "--gc-headroom -1 out of range (0..1048576 MiB; 0 turns it off)"},
		{name: "gc headroom with a unit", args: with("--gc-headroom", "64MiB"), wantErr: `invalid value "64MiB" for flag -gc-headroom`},
		{name: "negative decision cache", args: with("--decision-cache", "-1"), wantErr: "--decision-cache -1: want 0 (off) or a positive size"},
		{name: "zero decision cache TTL", args: with("--decision-cache-ttl", "0s"), wantErr: "--decision-cache-ttl 0s: want a positive duration"},
		{name: "weight too high", args: with("--weight", "1001"), wantErr: "--weight 1001 out of range (1..1000)"},
		{name: "audit-allowed above 1", args: with("--audit-allowed", "1.5"), wantErr: "--audit-allowed 1.5: want a fraction from 0 to 1"},
		{name: "audit-allowed NaN", args: with("--audit-allowed", "NaN"), wantErr: "--audit-allowed NaN"},
		{name: "audit-allowed not a number", args: with("--audit-allowed", "yes"), wantErr: "invalid value \"yes\" for flag -audit-allowed"},
		{name: "negative weight", args: with("--weight", "-1"), wantErr: "--weight -1 out of range"},
		{name: "version with slash", args: with("--version", "v2/../x"), wantErr: `--version "v2/../x": use 1 to 63 letters`},
		{name: "service with slash", args: []string{"agent", "--ca", "https://ca:8443", "--ca-fingerprint", fp, "--token", "t", "--service", "a/b"}, wantErr: `--service "a/b": must be one SPIFFE ID path segment`},
		{name: "negative ttl", args: with("--svid-ttl", "-1m"), wantErr: "--svid-ttl -1m0s is negative"},
		{name: "spiffe socket and ca", args: with("--spiffe-socket", "unix:///tmp/x.sock"), wantErr: "--spiffe-socket and --ca are exclusive"},
		{name: "bad spiffe socket", args: []string{"agent", "--spiffe-socket", "/tmp/x.sock", "--service", "web"}, wantErr: `--spiffe-socket "/tmp/x.sock"`},
		{name: "spiffe socket with ttl", args: []string{"agent", "--spiffe-socket", "unix:///tmp/x.sock", "--service", "web", "--svid-ttl", "1h"}, wantErr: "--svid-ttl applies to the meshguard CA only"},
		{name: "workload socket too long", args: with("--workload-socket", "/tmp/"+strings.Repeat("x", 110)), wantErr: "unix sockets allow at most 107"},
		{name: "workload socket dir missing", args: with("--workload-socket", "/nonexistent/dir/w.sock"), wantErr: "directory /nonexistent/dir does not exist"},
		{name: "negative uid", args: with("--workload-uid", "-5"), wantErr: "--workload-uid -5: want a uid >= 0"},
		{name: "bad admin", args: with("--admin", "localhost"), wantErr: `--admin "localhost": want HOST:PORT`},
		{name: "bad inbound port", args: with("--inbound", "0.0.0.0:99999"), wantErr: `--inbound "0.0.0.0:99999": port "99999"`},
		{name: "advertise unspecified", args: with("--advertise", "0.0.0.0:15443"), wantErr: "not an unspecified address"},
		{name: "advertise port zero", args: with("--advertise", "10.0.0.1:0"), wantErr: `--advertise "10.0.0.1:0": port "0"`},
		{name: "route without slash", args: with("--route", "api"), wantErr: `--route "api": invalid route "api": must start with /`},
		{name: "route with escape", args: with("--route", "/a%2Fb"), wantErr: `--route "/a%2Fb"`},
		{name: "peer without at", args: with("--peer", "users=spiffe://example.org/svc/users"), wantErr: "missing @HOST:PORT"},
		{name: "peer trust domain ID", args: with("--peer", "users=spiffe://example.org@10.0.0.2:15443"), wantErr: "names a trust domain, not a workload"},
		{name: "peer bad ID", args: with("--peer", "users=https://x/y@10.0.0.2:15443"), wantErr: `--peer "users=https://x/y@10.0.0.2:15443": parse peer "users=https://x/y@10.0.0.2:15443": SPIFFE ID: scheme is missing or invalid`},
		{name: "peer bad port", args: with("--peer", "users=spiffe://example.org/svc/users@10.0.0.2"), wantErr: "missing port in address"},
		{name: "policy not a dir", args: with("--policy", notDir), wantErr: "--policy " + notDir + ": not a readable directory"},
		{name: "negative cache", args: with("--decision-cache", "-1"), wantErr: "--decision-cache -1"},
		{name: "zero policy timeout", args: with("--policy-timeout", "0s"), wantErr: "--policy-timeout 0s: want a positive duration"},
		{name: "bad request timeout", args: with("--request-timeout", "soon"), wantErr: `invalid value "soon" for flag -request-timeout`},
		{name: "bad env", args: []string{"agent"}, vars: map[string]string{"MESHGUARD_POLICY_TIMEOUT": "x"}, wantErr: "MESHGUARD_POLICY_TIMEOUT"},
		{name: "stray argument", args: with("extra"), wantErr: `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, errb := testEnv(tc.vars)
			if code := run(context.Background(), tc.args, env); code != 2 {
				t.Fatalf("exit code = %d, want 2; stderr:\n%s", code, errb)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr = %q, want it to contain %q", errb, tc.wantErr)
			}
		})
	}
}

// TestAgentRuntimeFlags: the Go runtime settings of an agent. A sidecar
// runs on at most two scheduler processors unless --cpus (or
// MESHGUARD_CPUS) says otherwise, and a GOMAXPROCS variable is respected
// when --cpus is not given; the edge keeps the runtime's default. Both
// let the heap grow by up to 64 MiB between collections under load unless
// --gc-headroom (or MESHGUARD_GC_HEADROOM) says otherwise, and a GOGC
// variable is respected when --gc-headroom is not given.
func TestAgentRuntimeFlags(t *testing.T) {
	base := []string{"--ca", "https://ca:8443", "--ca-fingerprint", strings.Repeat("ab", 32), "--token", "t", "--service", "web"}
	two := min(2, runtime.NumCPU())
	tests := []struct {
		name           string
		cmd            string
		args           []string
		vars           map[string]string
		cpus, headroom int
	}{
		{name: "agent default", cmd: "agent", cpus: two, headroom: 64},
		{name: "edge default", cmd: "edge", cpus: 0, headroom: 64},
		{name: "cpus flag", cmd: "agent", args: []string{"--cpus", "4"}, cpus: 4, headroom: 64},
		{name: "cpus all", cmd: "agent", args: []string{"--cpus", "0"}, cpus: 0, headroom: 64},
		{name: "cpus env", cmd: "agent", vars: map[string]string{"MESHGUARD_CPUS": "3"}, cpus: 3, headroom: 64},
		{name: "GOMAXPROCS respected", cmd: "agent", vars: map[string]string{"GOMAXPROCS": "2"}, cpus: 0, headroom: 64},
		{name: "cpus flag wins over GOMAXPROCS", cmd: "agent", args: []string{"--cpus", "2"}, vars: map[string]string{"GOMAXPROCS": "8"}, cpus: 2, headroom: 64},
		{name: "headroom flag", cmd: "agent", args: []string{"--gc-headroom", "256"}, cpus: two, headroom: 256},
		{name: "headroom off", cmd: "agent", args: []string{"--gc-headroom", "0"}, cpus: two, headroom: 0},
		{name: "headroom env", cmd: "agent", vars: map[string]string{"MESHGUARD_GC_HEADROOM": "32"}, cpus: two, headroom: 32},
		{name: "GOGC respected", cmd: "agent", vars: map[string]string{"GOGC": "200"}, cpus: two, headroom: 0},
		{name: "headroom flag wins over GOGC", cmd: "edge", args: []string{"--gc-headroom", "16"}, vars: map[string]string{"GOGC": "off"}, cpus: 0, headroom: 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, _ := testEnv(tc.vars)
			c, err := parseAgentConfig(tc.cmd, env, append(append([]string{}, base...), tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			if c.cpus != tc.cpus || c.gcHeadroomMiB != tc.headroom {
				t.Fatalf("cpus %d, gc headroom %d MiB; want %d, %d", c.cpus, c.gcHeadroomMiB, tc.cpus, tc.headroom)
			}
		})
	}
}

func TestAgentConfigFromEnvironment(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("the-token\n"), 0o600)
	env, _, _ := testEnv(map[string]string{
		"MESHGUARD_CA":             "https://ca.example:8443",
		"MESHGUARD_CA_FINGERPRINT": strings.ToUpper(strings.Repeat("AB:", 31) + "AB"),
		"MESHGUARD_TOKEN_FILE":     tokenFile,
		"MESHGUARD_SERVICE":        "web",
		"MESHGUARD_ROUTE":          "/api,/web",
		"MESHGUARD_PEER":           "users=spiffe://example.org/svc/users@10.0.0.2:15443",
		"MESHGUARD_DRY_RUN":        "true",
		"MESHGUARD_SVID_TTL":       "10m",
	})
	c, err := parseAgentConfig("agent", env, []string{"--route", "/only"})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.caURL != "https://ca.example:8443", c.caFingerprint != strings.Repeat("ab", 32), c.token != "the-token",
		c.service != "web", !c.dryRun, c.svidTTL != 10*time.Minute:
		t.Fatalf("config = %+v", c)
	case len(c.routes) != 1 || c.routes[0] != "/only":
		t.Fatalf("routes = %q: the command line must win over the environment", c.routes)
	case len(c.peers) != 1 || c.peers[0].Service != "users" || c.peers[0].ID.String() != "spiffe://example.org/svc/users" || c.peers[0].Addr != "10.0.0.2:15443":
		t.Fatalf("peers = %+v", c.peers)
	case c.admin != "127.0.0.1:15000" || c.inbound != "0.0.0.0:15443" || c.outbound != "127.0.0.1:15001" || c.app != "127.0.0.1:8080":
		t.Fatalf("listener defaults = %+v", c)
	case c.workloadUID != os.Getuid() || c.policyTimeout != 100*time.Millisecond || c.requestTimeout != 15*time.Second:
		t.Fatalf("defaults = %+v", c)
	}
}

// syncBuffer is a bytes.Buffer safe to read while the agent logs into it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logValue polls the JSON log for a line with msg and returns its key.
func logValue(t *testing.T, logs *syncBuffer, msg, key string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
				if v, ok := rec[key].(string); ok {
					return v
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line %q with %q; logs:\n%s", msg, key, logs)
	return ""
}

// TestAgentFromWorkloadAPI runs the agent in-process with its identity from
// an upstream Workload API, serving its own Workload API and admin.
func TestAgentFromWorkloadAPI(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/svc/web")
	ca := testca.New(t, id.TrustDomain()).Intermediate()
	up := testca.NewSource(ca.SVID(id, testca.Options{}), ca.Bundle())
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	upPath, ownPath := filepath.Join(dir, "up.sock"), filepath.Join(dir, "own.sock")
	upSrv, err := workload.Listen(workload.Config{Path: upPath, UID: os.Getuid(), Source: up})
	if err != nil {
		t.Fatal(err)
	}
	upCtx, upCancel := context.WithCancel(context.Background())
	upDone := make(chan error, 1)
	go func() { upDone <- upSrv.Run(upCtx) }()
	defer func() { upCancel(); <-upDone }()

	logs := &syncBuffer{}
	var out bytes.Buffer
	env := &runEnv{stdout: &out, stderr: logs, getenv: func(string) string { return "" }, logger: slog.New(slog.NewJSONHandler(logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"agent", "--spiffe-socket", "unix://" + upPath, "--service", "web",
			"--workload-socket", ownPath, "--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0"}, env)
	}()
	defer func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("agent exit code = %d; logs:\n%s", c, logs)
		}
		if _, err := os.Stat(ownPath); !os.IsNotExist(err) {
			t.Errorf("workload socket left behind")
		}
	}()
	adminAddr := logValue(t, logs, "admin listening", "addr")
	logValue(t, logs, "agent identity ready", "spiffe_id")

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, body := get("/readyz"); c != 200 {
		t.Fatalf("readyz = %d %s", c, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "meshguard_svid_expiry_timestamp_seconds ") || !strings.Contains(body, "meshguard_svid_rotations_total 0") {
		t.Fatalf("metrics lack the SVID series:\n%s", body)
	}
	_, body := get("/status")
	var st agentStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Ready || st.Identity.SPIFFEID != id.String() || st.Identity.Source != "spiffe-workload-api" || st.WorkloadAPI != ownPath {
		t.Fatalf("status = %s (%v)", body, err)
	}

	senv, sout, serr := testEnv(nil)
	if c := run(context.Background(), []string{"status", "--admin", adminAddr}, senv); c != 0 || !strings.Contains(sout.String(), "SPIFFE ID:       "+id.String()) {
		t.Fatalf("status exit %d, out:\n%s\nerr:\n%s", c, sout, serr)
	}

	// The local workload gets the SVID from the agent's socket, and sees
	// the upstream rotation pushed through the agent.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	xs, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+ownPath)))
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	got, _ := xs.GetX509SVID()
	if !got.Certificates[0].Equal(up.Current().Certificates[0]) {
		t.Fatal("agent served a different SVID")
	}
	if _, _, err := x509svid.Verify(got.Certificates, xs); err != nil {
		t.Fatal(err)
	}
	next := ca.SVID(id, testca.Options{})
	up.Set(next, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := xs.GetX509SVID()
		if s.Certificates[0].Equal(next.Certificates[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotation was not pushed through the agent")
		}
		select {
		case <-xs.Updated():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, body := get("/metrics"); !strings.Contains(body, "meshguard_svid_rotations_total 1") {
		t.Fatal("rotation not counted")
	}
}

func TestStatusCommand(t *testing.T) {
	env, _, errb := testEnv(nil)
	if c := run(context.Background(), []string{"status", "--admin", "127.0.0.1:1", "--timeout", "2s"}, env); c != 1 || !strings.Contains(errb.String(), "is `meshguard agent` running with --admin 127.0.0.1:1?") {
		t.Fatalf("exit %d, stderr %s", c, errb)
	}
	env, _, errb = testEnv(nil)
	if c := run(context.Background(), []string{"status", "--admin", "ftp://x"}, env); c != 2 {
		t.Fatalf("exit %d, stderr %s", c, errb)
	}

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	doc := `{"version":"dev","ready":false,"not_ready":"identity: SVID expired","identity":{"source":"ca","spiffe_id":"spiffe://example.org/svc/web",
		"expiry":"2026-01-01T00:30:00Z","next_rotation":"2026-01-01T00:10:00Z","rotations":2,"last_error":"renew SVID: CA down","bundle_authorities":1,"ready":false},
		"policy":{"revision":"abc"}}`
	var out bytes.Buffer
	if err := printStatus(&out, []byte(doc), now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ready:           NO: identity: SVID expired",
		"SPIFFE ID:       spiffe://example.org/svc/web",
		"SVID expires:    2026-01-01T00:30:00Z (in 30m0s)",
		"next rotation:   2026-01-01T00:10:00Z (in 10m0s)",
		"rotations:       2",
		"last error:      renew SVID: CA down",
		`policy:          {"revision":"abc"}`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := printStatus(&out, []byte("not json"), now); err == nil {
		t.Fatal("garbage status accepted")
	}
}

// TestAgentWithRealCA runs the agent command in-process against the real
// CA: token bootstrap, the Workload API and admin, then a restart that
// needs no token, and a refusal (exit 2) when neither token nor SVID exists.
func TestAgentWithRealCA(t *testing.T) {
	caDir := t.TempDir()
	fp, err := ca.Init(ca.InitConfig{Dir: caDir, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.NewServer(ca.Config{Dir: caDir, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	caCtx, caCancel := context.WithCancel(context.Background())
	caDone := make(chan error, 1)
	go func() { caDone <- srv.Run(caCtx) }()
	defer func() { caCancel(); <-caDone }()
	<-srv.Ready()
	caURL := "https://" + srv.Addr().String()
	id := spiffeid.RequireFromString("spiffe://example.org/svc/web")
	tok, err := ca.CreateToken(caDir, id, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	dataDir := filepath.Join(sockDir, "data")
	sock := filepath.Join(sockDir, "w.sock")

	agent := func(extra ...string) (string, func()) {
		logs := &syncBuffer{}
		env := &runEnv{stdout: io.Discard, stderr: logs, getenv: func(string) string { return "" }, logger: slog.New(slog.NewJSONHandler(logs, nil))}
		ctx, cancel := context.WithCancel(context.Background())
		code := make(chan int, 1)
		args := append([]string{"agent", "--ca", caURL, "--ca-fingerprint", fp, "--service", "web", "--data-dir", dataDir,
			"--workload-socket", sock, "--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0"}, extra...)
		go func() { code <- run(ctx, args, env) }()
		addr := logValue(t, logs, "admin listening", "addr")
		logValue(t, logs, "agent identity ready", "spiffe_id")
		return addr, func() {
			cancel()
			if c := <-code; c != 0 {
				t.Errorf("agent exit code = %d; logs:\n%s", c, logs)
			}
		}
	}
	addr, stop := agent("--token", tok)
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	xs, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := xs.GetX509SVID()
	if got.ID != id {
		t.Fatalf("Workload API SVID = %s", got.ID)
	}
	if _, _, err := x509svid.Verify(got.Certificates, xs); err != nil {
		t.Fatal(err)
	}
	xs.Close()
	stop()

	// Restart without a token: the persisted SVID is enough.
	_, stop = agent()
	stop()

	// No token and nothing persisted: exit 2 saying what to do.
	env, _, errb := testEnv(nil)
	if c := run(context.Background(), []string{"agent", "--ca", caURL, "--ca-fingerprint", fp, "--service", "web",
		"--data-dir", t.TempDir(), "--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0"}, env); c != 2 || !strings.Contains(errb.String(), "no valid persisted SVID and no join token") {
		t.Fatalf("exit %d, stderr:\n%s", c, errb)
	}
}

// Both identity sources satisfy what the proxy consumes.
var (
	_ proxy.Source  = (*identity.CASource)(nil)
	_ proxy.Source  = (*identity.WorkloadAPISource)(nil)
	_ agentIdentity = (*identity.CASource)(nil)
	_ agentIdentity = (*identity.WorkloadAPISource)(nil)
)

// TestPrintStatusDataPlane: `meshguard status` shows the data plane for
// people (listeners, policy revision, routes, peers), not as raw JSON.
func TestPrintStatusDataPlane(t *testing.T) {
	body := []byte(`{"version":"dev","ready":true,"identity":{"source":"ca","spiffe_id":"spiffe://example.org/svc/web"},
		"data_plane":{"inbound":"127.0.0.1:1","outbound":"127.0.0.1:2","policy_revision":"abc","routes":["/web"],
		"peers":{"users":["127.0.0.1:3 spiffe://example.org/svc/users","127.0.0.1:4 spiffe://example.org/svc/users"],
		"billing":["127.0.0.1:5 spiffe://example.org/svc/billing"]},"registry_revision":7}}`)
	var out bytes.Buffer
	if err := printStatus(&out, body, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"policy revision: abc\n",
		"routes:          /web\n",
		"registry rev:    7\n",
		"peers:           billing    127.0.0.1:5 spiffe://example.org/svc/billing\n",
		"                 users      127.0.0.1:4 spiffe://example.org/svc/users\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "data_plane") {
		t.Errorf("data plane printed as raw JSON:\n%s", out.String())
	}
}
