package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/identity/workload"
	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// serveUpstream serves u as a Workload API until the test ends.
func serveUpstream(t *testing.T, u *testca.Source) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "up")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "up.sock")
	srv, err := workload.Listen(workload.Config{Path: path, UID: os.Getuid(), Source: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; os.RemoveAll(dir) })
	return srv.Addr()
}

func TestWorkloadAPISource(t *testing.T) {
	ca := testca.New(t, webID.TrustDomain()).Intermediate()
	// The upstream first offers an SVID meshguard refuses (a trust-domain
	// ID); Bootstrap must wait for an acceptable one.
	bad := ca.SVID(webID, testca.Options{URIs: []string{"spiffe://example.org"}})
	bad.ID = webID.TrustDomain().ID()
	up := testca.NewSource(bad, ca.Bundle())
	addr := serveUpstream(t, up)

	clk := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	src, err := identity.NewWorkloadAPISource(identity.WorkloadAPIConfig{Addr: addr, Clock: clk, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	boot := make(chan error, 1)
	go func() { boot <- src.Bootstrap(context.Background()) }()
	select {
	case err := <-boot:
		t.Fatalf("Bootstrap returned with a refused SVID: %v", err)
	case <-time.After(200 * time.Millisecond): // bounded wait for a non-event
	}
	good := ca.SVID(webID, testca.Options{NotAfter: time.Now().Add(time.Hour)})
	up.Set(good, nil)
	if err := <-boot; err != nil {
		t.Fatal(err)
	}
	got, _ := src.GetX509SVID()
	if !got.Certificates[0].Equal(good.Certificates[0]) {
		t.Fatal("not the upstream's good SVID")
	}
	if _, _, err := x509svid.Verify(got.Certificates, src); err != nil {
		t.Fatal(err)
	}
	st := src.Status()
	if st.Source != "spiffe-workload-api" || st.SPIFFEID != webID.String() || !st.Ready || !st.NextRotation.IsZero() {
		t.Fatalf("status = %+v", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// A rotation upstream is a change here, counted once.
	changed := src.Changed()
	next := ca.SVID(webID, testca.Options{NotAfter: time.Now().Add(2 * time.Hour)})
	up.Set(next, nil)
	<-changed
	waitFor(t, "the rotation", func() bool { s, _ := src.GetX509SVID(); return s.Certificates[0].Equal(next.Certificates[0]) })
	want := `
# HELP meshguard_svid_rotations_total Times the agent's X.509-SVID was replaced by a new one after the first.
# TYPE meshguard_svid_rotations_total counter
meshguard_svid_rotations_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meshguard_svid_rotations_total"); err != nil {
		t.Fatal(err)
	}

	// A hostile SVID upstream is refused; the previous one stays.
	up.Set(ca.SVID(webID, testca.Options{ExtKey: nil, RSABits: 1024}), nil)
	waitFor(t, "the refusal", func() bool { return src.Status().LastError != "" })
	if s, _ := src.GetX509SVID(); !s.Certificates[0].Equal(next.Certificates[0]) {
		t.Fatal("a refused SVID replaced the good one")
	}
	if !strings.Contains(src.Status().LastError, "RSA key of 1024 bits") {
		t.Fatalf("last error = %q", src.Status().LastError)
	}

	// Expiry without a new SVID upstream: not ready.
	clk.Set(next.Certificates[0].NotAfter.Add(time.Second))
	if err := src.Ready(); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("Ready after expiry = %v", err)
	}
}

func TestWorkloadAPISourceBadAddress(t *testing.T) {
	_, err := identity.NewWorkloadAPISource(identity.WorkloadAPIConfig{Addr: "/no/scheme.sock"})
	if err == nil || !strings.Contains(err.Error(), `Workload API address "/no/scheme.sock"`) {
		t.Fatalf("err = %v", err)
	}
}
