package workload_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/identity/workload"
	"github.com/meshguard/meshguard/internal/testca"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var webID = spiffeid.RequireFromString("spiffe://example.org/svc/web")

func newSource(t *testing.T) (*testca.Source, *testca.CA) {
	ca := testca.New(t, webID.TrustDomain()).Intermediate()
	return testca.NewSource(ca.SVID(webID, testca.Options{}), ca.Bundle()), ca
}

// socketPath is short: unix socket paths are limited to 107 bytes.
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "workload.sock")
}

// serve starts a server until the test ends and returns its address.
func serve(t *testing.T, path string, uid int, src workload.Source) string {
	t.Helper()
	srv, err := workload.Listen(workload.Config{Path: path, UID: uid, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind (%v)", path, err)
		}
	})
	return srv.Addr()
}

func TestGoSpiffeClientGetsSVIDAndRotations(t *testing.T) {
	src, ca := newSource(t)
	path := socketPath(t)
	addr := serve(t, path, os.Getuid(), src)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode().Perm(), err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	xs, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	got, err := xs.GetX509SVID()
	if err != nil || got.ID != webID || !got.Certificates[0].Equal(src.Current().Certificates[0]) || len(got.Certificates) != 2 {
		t.Fatalf("GetX509SVID = %v, %v", got, err)
	}
	if id, _, err := x509svid.Verify(got.Certificates, xs); err != nil || id != webID {
		t.Fatalf("verify against the served bundle: %v, %v", id, err)
	}

	next := ca.SVID(webID, testca.Options{})
	src.Set(next, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := xs.GetX509SVID()
		if s.Certificates[0].Equal(next.Certificates[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rotated SVID was not pushed")
		}
		select {
		case <-xs.Updated():
		case <-time.After(100 * time.Millisecond):
		}
	}
	s, _ := xs.GetX509SVID()
	if _, _, err := x509svid.Verify(s.Certificates, xs); err != nil {
		t.Fatalf("pushed SVID does not verify: %v", err)
	}

	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bundles, err := client.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(webID.TrustDomain())
	if err != nil || !b.Equal(ca.Bundle()) {
		t.Fatalf("FetchX509Bundles = %v, %v", b, err)
	}
	_, err = client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("FetchJWTSVID: %v, want Unimplemented", err)
	}
}

func TestRefusals(t *testing.T) {
	src, _ := newSource(t)
	mine := serve(t, socketPath(t), os.Getuid(), src)
	otherUID := serve(t, socketPath(t), os.Getuid()+4242, src)

	raw := func(t *testing.T, addr string) pb.SpiffeWorkloadAPIClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewSpiffeWorkloadAPIClient(conn)
	}
	withHeader := func(v string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), workload.Header, v)
	}
	tests := []struct {
		name     string
		addr     string
		ctx      context.Context
		call     func(ctx context.Context, c pb.SpiffeWorkloadAPIClient) error
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "no header", addr: mine, ctx: context.Background(), call: fetchX509, wantCode: codes.InvalidArgument, wantMsg: "security header missing from request"},
		{name: "header false", addr: mine, ctx: withHeader("false"), call: fetchX509, wantCode: codes.InvalidArgument, wantMsg: "security header missing"},
		{name: "no header, bundles", addr: mine, ctx: context.Background(), call: fetchBundles, wantCode: codes.InvalidArgument, wantMsg: "security header missing"},
		{name: "no header, unary", addr: mine, ctx: context.Background(), call: fetchJWT(10), wantCode: codes.InvalidArgument, wantMsg: "security header missing"},
		{name: "wrong uid", addr: otherUID, ctx: withHeader("true"), call: fetchX509, wantCode: codes.PermissionDenied, wantMsg: "is not allowed"},
		{name: "wrong uid, bundles", addr: otherUID, ctx: withHeader("true"), call: fetchBundles, wantCode: codes.PermissionDenied, wantMsg: "is not allowed"},
		{name: "wrong uid, unary", addr: otherUID, ctx: withHeader("true"), call: fetchJWT(10), wantCode: codes.PermissionDenied, wantMsg: "is not allowed"},
		{name: "oversized request", addr: mine, ctx: withHeader("true"), call: fetchJWT(100 << 10), wantCode: codes.ResourceExhausted},
		{name: "JWT unimplemented", addr: mine, ctx: withHeader("true"), call: fetchJWT(10), wantCode: codes.Unimplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tc.ctx, 10*time.Second)
			defer cancel()
			err := tc.call(ctx, raw(t, tc.addr))
			if status.Code(err) != tc.wantCode || !strings.Contains(status.Convert(err).Message(), tc.wantMsg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func fetchX509(ctx context.Context, c pb.SpiffeWorkloadAPIClient) error {
	s, err := c.FetchX509SVID(ctx, &pb.X509SVIDRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

func fetchBundles(ctx context.Context, c pb.SpiffeWorkloadAPIClient) error {
	s, err := c.FetchX509Bundles(ctx, &pb.X509BundlesRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

func fetchJWT(audienceLen int) func(context.Context, pb.SpiffeWorkloadAPIClient) error {
	return func(ctx context.Context, c pb.SpiffeWorkloadAPIClient) error {
		_, err := c.FetchJWTSVID(ctx, &pb.JWTSVIDRequest{Audience: []string{strings.Repeat("a", audienceLen)}})
		return err
	}
}

func TestOtherUIDSocketMode(t *testing.T) {
	src, _ := newSource(t)
	path := socketPath(t)
	serve(t, path, os.Getuid()+4242, src)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v, want 0660", fi.Mode().Perm(), err)
	}
}

func TestListenSocketFile(t *testing.T) {
	src, _ := newSource(t)
	stale := socketPath(t)
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves a socket file nobody serves

	regular := socketPath(t)
	if err := os.WriteFile(regular, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := socketPath(t)
	liveLn, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLn.Close()
	noDir := filepath.Join(t.TempDir(), "missing", "w.sock")

	tests := []struct {
		name    string
		cfg     workload.Config
		wantErr string
	}{
		{name: "stale socket replaced", cfg: workload.Config{Path: stale, UID: 0, Source: src}},
		{name: "regular file kept", cfg: workload.Config{Path: regular, UID: 0, Source: src}, wantErr: "exists and is not a socket; refusing to replace it"},
		{name: "live socket kept", cfg: workload.Config{Path: live, UID: 0, Source: src}, wantErr: "another process is serving on"},
		{name: "path too long", cfg: workload.Config{Path: "/tmp/" + strings.Repeat("x", 120), UID: 0, Source: src}, wantErr: "longer than the 107 a unix socket allows"},
		{name: "missing directory", cfg: workload.Config{Path: noDir, UID: 0, Source: src}, wantErr: "listen on " + noDir},
		{name: "empty path", cfg: workload.Config{Source: src}, wantErr: "socket path is empty"},
		{name: "negative uid", cfg: workload.Config{Path: stale, UID: -1, Source: src}, wantErr: "invalid uid -1"},
		{name: "no source", cfg: workload.Config{Path: stale}, wantErr: "no identity source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := workload.Listen(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				srv.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "data" {
		t.Fatal("the regular file was touched")
	}
}
