package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const webID = "spiffe://example.org/svc/web"

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// runSource runs src.Run until the test ends.
func runSource(t *testing.T, src *CASource) {
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

type sourceOpts struct {
	token, dir, url, fp string
	clk                 *clock.Fake
	reg                 prometheus.Registerer
}

func newTestSource(t *testing.T, f *fakeCA, o sourceOpts) *CASource {
	t.Helper()
	if o.url == "" {
		o.url = f.srv.URL
	}
	if o.fp == "" {
		o.fp = f.fingerprint()
	}
	if o.clk == nil {
		o.clk = clock.NewFake(time.Now())
	}
	src, err := NewCASource(CAConfig{
		URL: o.url, Fingerprint: o.fp, Token: o.token, Service: "web", DataDir: o.dir,
		Clock: o.clk, Rand: func() float64 { return 0.5 }, Registerer: o.reg,
		MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestNewCASourceConfig(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		cfg     CAConfig
		wantErr string
	}{
		{name: "http URL", cfg: CAConfig{URL: "http://ca:8443", Fingerprint: fp, Service: "web"}, wantErr: "want https://host:port"},
		{name: "no host", cfg: CAConfig{URL: "https://", Fingerprint: fp, Service: "web"}, wantErr: "want https://host:port"},
		{name: "user info", cfg: CAConfig{URL: "https://u:p@ca:8443", Fingerprint: fp, Service: "web"}, wantErr: "must not carry user info"},
		{name: "bad fingerprint", cfg: CAConfig{URL: "https://ca:8443", Fingerprint: "abc", Service: "web"}, wantErr: "want the 64 hex digits"},
		{name: "empty service", cfg: CAConfig{URL: "https://ca:8443", Fingerprint: fp}, wantErr: `service name ""`},
		{name: "service with slash", cfg: CAConfig{URL: "https://ca:8443", Fingerprint: fp, Service: "a/b"}, wantErr: `service name "a/b"`},
		{name: "service dot-dot", cfg: CAConfig{URL: "https://ca:8443", Fingerprint: fp, Service: ".."}, wantErr: `service name ".."`},
		{name: "negative ttl", cfg: CAConfig{URL: "https://ca:8443", Fingerprint: fp, Service: "web", TTL: -time.Second}, wantErr: "negative SVID TTL"},
		{name: "valid", cfg: CAConfig{URL: "https://ca:8443/", Fingerprint: fp, Service: "web"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCASource(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestBootstrapWithToken(t *testing.T) {
	f := newFakeCA(t, "tok")
	dir := filepath.Join(t.TempDir(), "data")
	reg := prometheus.NewRegistry()
	src := newTestSource(t, f, sourceOpts{token: "tok", dir: dir, reg: reg})
	changed := src.Changed()
	if err := src.Ready(); !errors.Is(err, ErrNoSVID) {
		t.Fatalf("Ready before bootstrap = %v, want ErrNoSVID", err)
	}
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed channel not closed by the first SVID")
	}
	svid, err := src.GetX509SVID()
	if err != nil || svid.ID.String() != webID || len(svid.Certificates) != 2 {
		t.Fatalf("GetX509SVID = %v, %v", svid, err)
	}
	if err := src.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	b, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(f.root.Root()) {
		t.Fatalf("bundle = %v, %v", b, err)
	}
	st := src.Status()
	if st.SPIFFEID != webID || st.Source != "ca" || !st.Ready || st.Rotations != 0 || st.BundleAuthorities != 1 {
		t.Fatalf("status = %+v", st)
	}
	if want := NextRotation(time.Time{}, svid.Certificates[0], 0); !st.NextRotation.Equal(want) {
		t.Fatalf("next rotation = %s, want %s", st.NextRotation, want)
	}
	for _, name := range []string{svidFile, bundleFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v", name, err, fi)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode = %o, want 700", fi.Mode().Perm())
	}
	if got := testutil.ToFloat64(src.st.expiry); got != float64(svid.Certificates[0].NotAfter.Unix()) {
		t.Fatalf("expiry metric = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "meshguard_svid_expiry_timestamp_seconds", "meshguard_svid_rotations_total"); err != nil || n != 2 {
		t.Fatalf("registered metrics = %d, %v", n, err)
	}
}

func TestBootstrapRefusals(t *testing.T) {
	other := newFakeCA(t, "tok") // a different root
	tests := []struct {
		name    string
		setup   func(f *fakeCA)
		token   string
		fp      func(f *fakeCA) string
		wantErr string
	}{
		{name: "wrong fingerprint", token: "tok", fp: func(*fakeCA) string { return other.fingerprint() },
			wantErr: "refusing to trust it"},
		{name: "CA serves another root", token: "tok", setup: func(f *fakeCA) { f.servedRoot = other.root.Root() },
			wantErr: "refusing to trust it"},
		{name: "token refused", token: "nope",
			wantErr: "sign SVID with join token: CA answered 401 Unauthorized: The request lacked necessary authorization"},
		{name: "SVID for another ID", token: "tok", setup: func(f *fakeCA) { f.issueURI = "spiffe://example.org/svc/admin" },
			wantErr: "CA response: SVID is for spiffe://example.org/svc/admin, want " + webID},
		{name: "trust-domain-only SVID", token: "tok", setup: func(f *fakeCA) { f.issueURI = "spiffe://example.org" },
			wantErr: "CA response: svid check: spiffe://example.org is a trust domain ID"},
		{name: "SVID for another key", token: "tok", setup: func(f *fakeCA) { f.otherKey = true },
			wantErr: "CA response: the certificate is not for the key this agent generated"},
		{name: "expired SVID", token: "tok", setup: func(f *fakeCA) { f.ttl = -time.Second },
			wantErr: "certificate has expired or is not yet valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCA(t, "tok")
			if tc.setup != nil {
				tc.setup(f)
			}
			o := sourceOpts{token: tc.token, dir: t.TempDir()}
			if tc.fp != nil {
				o.fp = tc.fp(f)
			}
			src := newTestSource(t, f, o)
			err := src.Bootstrap(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if _, err := os.Stat(filepath.Join(o.dir, svidFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("an SVID was persisted after a refusal (%v)", err)
			}
			if _, err := src.GetX509SVID(); !errors.Is(err, ErrNoSVID) {
				t.Fatalf("GetX509SVID after refusal = %v", err)
			}
		})
	}
}

func TestBootstrapNeedsToken(t *testing.T) {
	// No token and nothing persisted: refused before any network access.
	src, err := NewCASource(CAConfig{URL: "https://127.0.0.1:1", Fingerprint: strings.Repeat("ab", 32), Service: "web", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Bootstrap(context.Background()); !errors.Is(err, ErrNeedToken) {
		t.Fatalf("err = %v, want ErrNeedToken", err)
	}
}

func TestRestartUsesPersistedSVID(t *testing.T) {
	f := newFakeCA(t, "tok")
	dir := t.TempDir()
	first := newTestSource(t, f, sourceOpts{token: "tok", dir: dir})
	if err := first.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	want, _ := first.GetX509SVID()
	// The CA is unreachable and no token is given: the persisted SVID and
	// bundle are enough.
	second := newTestSource(t, f, sourceOpts{dir: dir, url: "https://127.0.0.1:1"})
	if err := second.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := second.GetX509SVID()
	if !got.Certificates[0].Equal(want.Certificates[0]) {
		t.Fatal("restart did not reuse the persisted SVID")
	}
	if f.signs != 1 {
		t.Fatalf("CA signed %d times, want 1", f.signs)
	}

	// A different service cannot reuse it.
	third, err := NewCASource(CAConfig{URL: "https://127.0.0.1:1", Fingerprint: f.fingerprint(), Service: "api", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = third.Bootstrap(context.Background())
	if !errors.Is(err, ErrNeedToken) || !strings.Contains(err.Error(), "SVID is for "+webID+", want spiffe://example.org/svc/api") {
		t.Fatalf("err = %v", err)
	}
}

func TestCorruptPersistedSVID(t *testing.T) {
	f := newFakeCA(t, "tok")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, svidFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	noToken := newTestSource(t, f, sourceOpts{dir: dir})
	err := noToken.Bootstrap(context.Background())
	if !errors.Is(err, ErrNeedToken) || !strings.Contains(err.Error(), "svid.pem: not PEM (corrupt file?)") {
		t.Fatalf("err = %v", err)
	}
	withToken := newTestSource(t, f, sourceOpts{dir: dir, token: "tok"})
	if err := withToken.Bootstrap(context.Background()); err != nil {
		t.Fatalf("fallback to the token: %v", err)
	}
	if _, err := loadSVID(dir); err != nil {
		t.Fatalf("the new SVID was not persisted over the corrupt one: %v", err)
	}
}

func TestRotation(t *testing.T) {
	f := newFakeCA(t, "tok")
	dir := t.TempDir()
	clk := clock.NewFake(time.Now())
	src := newTestSource(t, f, sourceOpts{token: "tok", dir: dir, clk: clk})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	old, _ := src.GetX509SVID()
	changed := src.Changed()
	runSource(t, src)
	waitFor(t, "the rotation loop to wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(src.Status().NextRotation)
	waitFor(t, "a rotation", func() bool { return src.Status().Rotations == 1 })
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by the rotation")
	}
	cur, _ := src.GetX509SVID()
	if cur.Certificates[0].Equal(old.Certificates[0]) || samePublicKey(cur.Certificates[0], old.PrivateKey) {
		t.Fatal("rotation kept the certificate or the key")
	}
	if f.rekeys != 1 || f.signs != 1 {
		t.Fatalf("rekeys = %d, signs = %d; want 1 and 1", f.rekeys, f.signs)
	}
	persisted, err := loadSVID(dir)
	if err != nil || !persisted.Certificates[0].Equal(cur.Certificates[0]) {
		t.Fatalf("persisted SVID is not the rotated one (%v)", err)
	}
	if got := testutil.ToFloat64(src.st.rotated); got != 1 {
		t.Fatalf("rotations metric = %v", got)
	}
	if next := src.Status().NextRotation; !next.Equal(NextRotation(clk.Now(), cur.Certificates[0], 0)) || !next.After(clk.Now()) {
		t.Fatalf("next rotation %s not rescheduled from the new SVID", next)
	}
}

func TestRenewalFailureKeepsSVIDThenExpires(t *testing.T) {
	f := newFakeCA(t, "tok")
	clk := clock.NewFake(time.Now())
	src := newTestSource(t, f, sourceOpts{token: "tok", clk: clk})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	svid, _ := src.GetX509SVID()
	f.srv.Close() // the CA goes away
	runSource(t, src)

	waitFor(t, "the rotation loop to wait", func() bool { return clk.Waiters() == 1 })
	clk.Set(src.Status().NextRotation)
	waitFor(t, "a failed renewal", func() bool { return src.Status().LastError != "" })
	st := src.Status()
	if !strings.Contains(st.LastError, "renew SVID") || !st.Ready || st.Rotations != 0 {
		t.Fatalf("status after a failure = %+v", st)
	}
	if got, _ := src.GetX509SVID(); got != svid {
		t.Fatal("the current SVID is not served after a failed renewal")
	}
	// Backoff doubles: 1s, 2s, 4s, then the 8s cap.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		waitFor(t, "the retry wait", func() bool { return clk.Waiters() == 1 })
		now := clk.Now()
		if got := src.Status().NextRotation.Sub(now); got != want {
			t.Fatalf("retry %d scheduled in %s, want %s", i, got, want)
		}
		clk.Advance(want)
		waitFor(t, "the retry", func() bool { return src.Status().NextRotation.After(clk.Now()) })
	}
	if err := src.Ready(); err != nil {
		t.Fatalf("Ready before expiry = %v", err)
	}
	clk.Set(svid.Certificates[0].NotAfter.Add(time.Second))
	err := src.Ready()
	if err == nil || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), "last error: renew SVID") {
		t.Fatalf("Ready after expiry = %v", err)
	}
	if src.Status().Ready {
		t.Fatal("status says ready after expiry")
	}
}
