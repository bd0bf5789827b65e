package identity

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestHostileSignResponses(t *testing.T) {
	other := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	foreign := other.SVID(spiffeid.RequireFromString(webID), testca.Options{})
	tests := []struct {
		name    string
		code    int
		body    string
		wantErr string
	}{
		{name: "not JSON", code: 201, body: "<html>hello</html>", wantErr: "sign SVID with join token: decode response"},
		{name: "huge body", code: 201, body: `{"crt":"` + strings.Repeat("A", 2<<20) + `"}`, wantErr: "decode response"},
		{name: "empty crt", code: 201, body: `{"crt":""}`, wantErr: `want exactly one certificate in "crt"`},
		{name: "two certificates in crt", code: 201, body: `{"crt":` + jsonString(pemCert(foreign.Certificates[0])+pemCert(foreign.Certificates[0])) + `}`, wantErr: `want exactly one certificate in "crt"`},
		{name: "certChain not starting with crt", code: 201, body: `{"crt":` + jsonString(pemCert(foreign.Certificates[0])) + `,"certChain":[` + jsonString(pemCert(other.Root())) + `]}`, wantErr: "certChain does not start with crt"},
		{name: "certificate for someone else's key", code: 201, body: `{"crt":` + jsonString(pemCert(foreign.Certificates[0])) + `}`, wantErr: "not for the key this agent generated"},
		{name: "error with control characters", code: 403, body: `{"status":403,"message":"no\u001b[31m way\n"}`, wantErr: "CA answered 403 Forbidden: no [31m way"},
		{name: "error without JSON", code: 400, body: "plain failure", wantErr: "CA answered 400 Bad Request: plain failure"},
		{name: "long error truncated", code: 400, body: strings.Repeat("x", 1000), wantErr: strings.Repeat("x", 200) + "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCA(t, "tok")
			f.rawSign, f.rawStatus = []byte(tc.body), tc.code
			src := newTestSource(t, f, sourceOpts{token: "tok", dir: t.TempDir()})
			err := src.Bootstrap(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %.300v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func jsonString(s string) string {
	r := strings.NewReplacer("\\", "\\\\", "\"", "\\\"", "\n", "\\n")
	return `"` + r.Replace(s) + `"`
}

func TestBootstrapRetriesTransientFailures(t *testing.T) {
	f := newFakeCA(t, "tok")
	f.rawSign, f.rawStatus = []byte(`{"status":503,"message":"busy"}`), 503
	clk := clock.NewFake(time.Now())
	src := newTestSource(t, f, sourceOpts{token: "tok", clk: clk})
	done := make(chan error, 1)
	go func() { done <- src.Bootstrap(context.Background()) }()
	waitFor(t, "the first retry wait", func() bool { return clk.Waiters() == 1 })
	if st := src.Status(); !strings.Contains(st.LastError, "CA answered 503 Service Unavailable: busy") {
		t.Fatalf("last error = %q", st.LastError)
	}
	f.mu.Lock()
	f.rawSign = nil
	f.mu.Unlock()
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.signs != 2 {
		t.Fatalf("signs = %d, want 2", f.signs)
	}
}

func TestBootstrapGivesUpWithContext(t *testing.T) {
	f := newFakeCA(t, "tok")
	f.srv.Close()
	clk := clock.NewFake(time.Now())
	src := newTestSource(t, f, sourceOpts{token: "tok", clk: clk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Bootstrap(ctx) }()
	waitFor(t, "the retry wait", func() bool { return clk.Waiters() == 1 })
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "pin CA root: context canceled (last error: fetch CA root:") {
		t.Fatalf("err = %v", err)
	}
}

func TestBundleRefresh(t *testing.T) {
	f := newFakeCA(t, "tok")
	clk := clock.NewFake(time.Now())
	dir := t.TempDir()
	src := newTestSource(t, f, sourceOpts{token: "tok", clk: clk, dir: dir})
	if err := src.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	second := testca.New(t, td).Root()
	f.mu.Lock()
	f.roots = []*x509.Certificate{f.root.Root(), second}
	f.mu.Unlock()
	changed := src.Changed()
	runSource(t, src)
	waitFor(t, "the loop to wait", func() bool { return clk.Waiters() == 1 })
	clk.Advance(DefaultBundleRefresh)
	<-changed
	b, _ := src.GetX509BundleForTrustDomain(td)
	if len(b.X509Authorities()) != 2 || src.Status().BundleAuthorities != 2 {
		t.Fatalf("bundle has %d authorities, want 2", len(b.X509Authorities()))
	}
	if roots, err := loadBundle(dir); err != nil || len(roots) != 2 {
		t.Fatalf("persisted bundle: %d roots, %v", len(roots), err)
	}

	// A root set without the pinned root is refused.
	f.mu.Lock()
	f.roots = []*x509.Certificate{second}
	f.mu.Unlock()
	waitFor(t, "the loop to wait", func() bool { return clk.Waiters() == 1 })
	changed = src.Changed()
	clk.Advance(DefaultBundleRefresh)
	waitFor(t, "the loop to wait again", func() bool { return clk.Waiters() == 1 })
	select {
	case <-changed:
		t.Fatal("a root set without the pinned root was installed")
	default:
	}
	if b, _ := src.GetX509BundleForTrustDomain(td); len(b.X509Authorities()) != 2 {
		t.Fatal("the bundle changed")
	}
}
