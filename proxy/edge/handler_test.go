package edge

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// upstream records what reaches the mesh side of the edge.
type upstream struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.reqs = append(u.reqs, r)
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func newTestHandler(t *testing.T, expose, rewrites, rates, bursts []string, clock *fakeClock) (*Handler, *upstream, *Metrics) {
	t.Helper()
	e, err := NewExposure(expose, rewrites)
	if err != nil {
		t.Fatal(err)
	}
	def, err := ApplyLimits(e, rates, bursts, 1000, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	up := &upstream{}
	h, err := NewHandler(Config{Exposure: e, Default: def, Next: up, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return h, up, m
}

// do sends a request whose target is exactly target, as a server would hand
// it over (httptest.NewRequest refuses hostile targets like "/%zz").
func do(h http.Handler, method, target, remote string, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", nil)
	r.RequestURI = target
	if u, err := url.ParseRequestURI(target); err == nil {
		r.URL = u
	}
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestEdgeExposureAndRewrite(t *testing.T) {
	h, up, m := newTestHandler(t, []string{"/users"}, []string{"/users=/user-service/users"}, nil, nil, newFakeClock())
	tests := []struct {
		target   string
		wantCode int
		wantPath string // what the mesh receives ("" = nothing reaches it)
	}{
		{target: "/users/42?x=1", wantCode: 200, wantPath: "/user-service/users/42?x=1"},
		{target: "/users", wantCode: 200, wantPath: "/user-service/users"},
		{target: "/users/./42", wantCode: 200, wantPath: "/user-service/users/42"},
		{target: "/users//42", wantCode: 200, wantPath: "/user-service/users/42"},
		{target: "/us%65rs/42", wantCode: 200, wantPath: "/user-service/users/42"},
		{target: "/users/../admin", wantCode: 404},
		{target: "/users/%2e%2e/admin", wantCode: 404},
		{target: "/admin", wantCode: 404},
		{target: "/usersecret", wantCode: 404},
		{target: "/", wantCode: 404},
		{target: "/users/a%2Fb", wantCode: 400},
		{target: "/users/a%5Cb", wantCode: 400},
		{target: "/users/a%00b", wantCode: 400},
		{target: "/users/%zz", wantCode: 400},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			before := up.count()
			w := do(h, "GET", tc.target, "203.0.113.7:1234", nil)
			if w.Code != tc.wantCode {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.wantCode, w.Body)
			}
			if tc.wantPath == "" {
				if up.count() != before {
					t.Fatal("a refused request reached the mesh")
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Fatalf("refusal Content-Type %q, want JSON", ct)
				}
				return
			}
			got := up.reqs[len(up.reqs)-1]
			if got.RequestURI != tc.wantPath || got.URL.RequestURI() != tc.wantPath {
				t.Fatalf("mesh got %q (URL %q), want %q", got.RequestURI, got.URL.RequestURI(), tc.wantPath)
			}
		})
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("-", "404")); v != 5 {
		t.Fatalf("unexposed 404s counted %v, want 5", v)
	}
}

// TestEdgeRateLimitNginxBurst: --rate 10/s --burst 280, 300 requests at one
// instant from one client: exactly the first 281 pass, the rest get 429 with
// Retry-After and never reach the mesh; another client is unaffected.
func TestEdgeRateLimitNginxBurst(t *testing.T) {
	h, up, m := newTestHandler(t, []string{"/users"}, nil, []string{"10/s"}, []string{"280"}, newFakeClock())
	var ok, limited, firstLimited int
	firstLimited = -1
	for i := 0; i < 300; i++ {
		w := do(h, "GET", "/users/1", "198.51.100.7:4000", nil)
		switch w.Code {
		case 200:
			ok++
		case 429:
			limited++
			if firstLimited < 0 {
				firstLimited = i
				if ra := w.Header().Get("Retry-After"); ra != "1" {
					t.Fatalf("Retry-After %q, want 1 (one request drains in 100ms)", ra)
				}
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	}
	if ok != 281 || limited != 19 || firstLimited != 281 {
		t.Fatalf("ok=%d limited=%d first limited=#%d, want the first 281 through and 19 limited", ok, limited, firstLimited)
	}
	if up.count() != 281 {
		t.Fatalf("%d requests reached the mesh, want 281", up.count())
	}
	if w := do(h, "GET", "/users/1", "198.51.100.8:4000", nil); w.Code != 200 {
		t.Fatalf("another client got %d", w.Code)
	}
	// A forged X-Forwarded-For does not give a client a new bucket.
	if w := do(h, "GET", "/users/1", "198.51.100.7:4001", http.Header{"X-Forwarded-For": {"10.9.9.9"}}); w.Code != 429 {
		t.Fatalf("a forged X-Forwarded-For escaped the limit: %d", w.Code)
	}
	if v := testutil.ToFloat64(m.limited.WithLabelValues("/users")); v != 20 {
		t.Fatalf("meshguard_edge_rate_limited_total = %v, want 20", v)
	}
}

func TestEdgePerPrefixLimitsAndAPIKey(t *testing.T) {
	clock := newFakeClock()
	e, _ := NewExposure([]string{"/users", "/search"}, nil)
	def, err := ApplyLimits(e, []string{"100/s", "/search=1/s"}, []string{"/search=0"}, 100, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewMetrics(nil)
	h, _ := NewHandler(Config{Exposure: e, Default: def, RateKeyHeader: "x-api-key", Next: &upstream{}, Metrics: m})
	key := http.Header{"X-Api-Key": {"k1"}}
	if w := do(h, "GET", "/search?q=a", "192.0.2.1:1", key); w.Code != 200 {
		t.Fatalf("first search %d", w.Code)
	}
	if w := do(h, "GET", "/search?q=b", "192.0.2.2:1", key); w.Code != 429 {
		t.Fatalf("same API key from another IP: %d, want 429 (keyed by API key)", w.Code)
	}
	if w := do(h, "GET", "/search?q=b", "192.0.2.1:1", http.Header{"X-Api-Key": {"k2"}}); w.Code != 200 {
		t.Fatalf("another API key: %d", w.Code)
	}
	if w := do(h, "GET", "/users/1", "192.0.2.1:1", key); w.Code != 200 {
		t.Fatalf("/users has its own (global) bucket: %d", w.Code)
	}
	clock.Add(time.Second)
	if w := do(h, "GET", "/search?q=c", "192.0.2.1:1", key); w.Code != 200 {
		t.Fatalf("after a second: %d", w.Code)
	}
}

func TestApplyLimitsRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name          string
		rates, bursts []string
		wantErr       string
	}{
		{name: "bad rate", rates: []string{"fast"}, wantErr: `--rate "fast"`},
		{name: "unexposed prefix rate", rates: []string{"/admin=1/s"}, wantErr: "/admin is not exposed"},
		{name: "unexposed prefix burst", rates: []string{"1/s"}, bursts: []string{"/admin=1"}, wantErr: "/admin is not exposed"},
		{name: "negative burst", rates: []string{"1/s"}, bursts: []string{"-1"}, wantErr: "want a whole number"},
		{name: "burst without rate", bursts: []string{"5"}, wantErr: "--burst without --rate"},
		{name: "prefix burst without rate", bursts: []string{"/users=5"}, wantErr: "--burst without --rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := NewExposure([]string{"/users"}, nil)
			_, err := ApplyLimits(e, tc.rates, tc.bursts, 10, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestEdgeStripsIdentityHeadersAndHost: spoofed identity headers never
// reach the mesh, the client is appended to X-Forwarded-For, and the
// outside's Host cannot choose a service.
func TestEdgeStripsIdentityHeadersAndHost(t *testing.T) {
	h, up, _ := newTestHandler(t, []string{"/users"}, nil, nil, nil, newFakeClock())
	hdr := http.Header{
		"X-Forwarded-Client-Cert": {"By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/admin"},
		"X-Forwarded-For":         {"127.0.0.1"},
		"X-Meshguard-Whatever":    {"1"},
	}
	r := httptest.NewRequest("GET", "/users/1", nil)
	r.RemoteAddr = "203.0.113.7:555"
	r.Host = "billing"
	for k, v := range hdr {
		r.Header[k] = v
	}
	h.ServeHTTP(httptest.NewRecorder(), r)
	got := up.reqs[0]
	if got.Header.Get("X-Forwarded-Client-Cert") != "" || got.Header.Get("X-Meshguard-Whatever") != "" {
		t.Fatalf("identity headers reached the mesh: %v", got.Header)
	}
	if xff := got.Header.Get("X-Forwarded-For"); xff != "127.0.0.1, 203.0.113.7" {
		t.Fatalf("X-Forwarded-For %q, want the outside's value then the client", xff)
	}
	if got.Host != "" || got.URL.Host != "" {
		t.Fatalf("Host %q / %q reached the mesh: the outside would choose the service", got.Host, got.URL.Host)
	}
}
