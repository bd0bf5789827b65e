package admin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/admin"
	"github.com/prometheus/client_golang/prometheus"
)

func start(t *testing.T, ready func() error, status func() any) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshguard_svid_rotations_total", Help: "x"})
	reg.MustRegister(c)
	c.Add(3)
	srv, err := admin.Listen(admin.Config{Addr: "127.0.0.1:0", Gatherer: reg, Ready: ready, Status: status})
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
	})
	return "http://" + srv.Addr().String()
}

func TestEndpoints(t *testing.T) {
	var notReady atomic.Pointer[error]
	ready := func() error {
		if e := notReady.Load(); e != nil {
			return *e
		}
		return nil
	}
	base := start(t, ready, func() any {
		return map[string]any{"identity": map[string]string{"spiffe_id": "spiffe://example.org/svc/web"}}
	})
	get := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, method, path string
		wantCode           int
		wantBody           string
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200, wantBody: "ok"},
		{name: "readyz", method: "GET", path: "/readyz", wantCode: 200, wantBody: "ready"},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantBody: "meshguard_svid_rotations_total 3"},
		{name: "status", method: "GET", path: "/status", wantCode: 200, wantBody: `"spiffe_id": "spiffe://example.org/svc/web"`},
		{name: "pprof index", method: "GET", path: "/debug/pprof/", wantCode: 200, wantBody: "goroutine"},
		{name: "pprof goroutine", method: "GET", path: "/debug/pprof/goroutine?debug=1", wantCode: 200, wantBody: "goroutine profile"},
		{name: "unknown path", method: "GET", path: "/nope", wantCode: 404},
		{name: "POST status", method: "POST", path: "/status", wantCode: 405},
		{name: "DELETE readyz", method: "DELETE", path: "/readyz", wantCode: 405},
		{name: "HEAD healthz", method: "HEAD", path: "/healthz", wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.method, tc.path)
			if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	e := errors.New("identity: SVID expired")
	notReady.Store(&e)
	if code, body := get("GET", "/readyz"); code != 503 || !strings.Contains(body, "not ready: identity: SVID expired") {
		t.Fatalf("readyz when not ready = %d %q", code, body)
	}
}

func TestHostileRequests(t *testing.T) {
	base := start(t, func() error { return nil }, func() any { return map[string]int{} })
	addr := strings.TrimPrefix(base, "http://")
	tests := []struct {
		name     string
		request  string
		wantCode string
	}{
		{name: "huge header", request: "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", wantCode: "431"},
		{name: "malformed request line", request: "GARBAGE\r\n\r\n", wantCode: "400"},
		{name: "dot-dot path is cleaned by a redirect", request: "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", wantCode: "307"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprint(conn, tc.request)
			b := make([]byte, 64)
			n, _ := io.ReadAtLeast(conn, b, 12)
			if got := string(b[:n]); !strings.HasPrefix(got, "HTTP/1.1 "+tc.wantCode) {
				t.Fatalf("response %q, want status %s", got, tc.wantCode)
			}
		})
	}
}

func TestStatusMarshalError(t *testing.T) {
	base := start(t, func() error { return nil }, func() any { return map[string]any{"bad": func() {}} })
	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("status = %d, want 500", resp.StatusCode)
	}
}

func TestListenErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := func() error { return nil }
	st := func() any { return nil }
	tests := []struct {
		name    string
		cfg     admin.Config
		wantErr string
	}{
		{name: "missing funcs", cfg: admin.Config{Addr: "127.0.0.1:0", Gatherer: reg}, wantErr: "Gatherer, Ready and Status are required"},
		{name: "bad address", cfg: admin.Config{Addr: "127.0.0.1:99999", Gatherer: reg, Ready: ok, Status: st}, wantErr: "admin: listen on 127.0.0.1:99999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.Listen(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
