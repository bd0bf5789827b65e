package proxy

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
)

func echoApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App-Path", r.RequestURI)
		w.Header().Set("X-App-XFCC", r.Header.Get("X-Forwarded-Client-Cert"))
		_, _ = io.Copy(w, r.Body)
	})
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
}

func get(t testing.TB, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestTwoAgentsOneHandshake: 1000 requests from web's app through both
// agents share one TLS handshake per side, including across a forced SVID
// rotation of both agents mid-run, with zero failed requests.
func TestTwoAgentsOneHandshake(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp()})
	c := newClient()
	defer c.CloseIdleConnections()
	var failures atomic.Int64
	var done atomic.Int64
	rotated := make(chan struct{})
	var once sync.Once
	var g errgroup.Group
	for w := 0; w < 8; w++ {
		g.Go(func() error {
			for i := 0; i < 125; i++ {
				body := fmt.Sprintf("w%d-%d", w, i)
				req, _ := http.NewRequest(http.MethodPost, m.outURL+"/echo", strings.NewReader(body))
				req.Host = "users"
				resp, err := c.Do(req)
				if err != nil {
					failures.Add(1)
					continue
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(got) != body {
					failures.Add(1)
				}
				if done.Add(1) == 500 {
					once.Do(func() {
						m.webSrc.Set(m.ca.SVID(svcID("web"), testca.Options{}), nil)
						m.usersSrc.Set(m.ca.SVID(svcID("users"), testca.Options{}), nil)
						close(rotated)
					})
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	<-rotated
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of 1000 requests failed", f)
	}
	if got := handshakes(m.webM, dirOutbound); got != 1 {
		t.Errorf("outbound handshakes = %v, want 1", got)
	}
	if got := handshakes(m.usersM, dirInbound); got != 1 {
		t.Errorf("inbound handshakes = %v, want 1", got)
	}
	if got := counterValue(m.webM.upstreams); got != 1 {
		t.Errorf("upstream connections = %v, want 1", got)
	}
	if got := counterValue(m.webM.requests.WithLabelValues(dirOutbound, "users", "200")); got != 1000 {
		t.Errorf("outbound requests{200} = %v, want 1000", got)
	}
	if got := counterValue(m.usersM.requests.WithLabelValues(dirInbound, "web", "200")); got != 1000 {
		t.Errorf("inbound requests{web,200} = %v, want 1000", got)
	}
}

// TestOutboundRefusesWrongServer: the outbound side accepts only the exact
// SPIFFE ID of the service; any other server certificate fails the
// handshake and the request is a 502 that never reached the app.
func TestOutboundRefusesWrongServer(t *testing.T) {
	var hits atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	m := newMesh(t, meshOpts{app: app, outTweak: func(c *OutboundConfig) { c.MaxRetries = -1; c.Ejection.ConsecutiveFailures = 100 }})
	foreign := testca.New(t, td)
	tests := []struct {
		name string
		svid *x509svid.SVID
	}{
		{name: "another service's SVID", svid: m.ca.SVID(svcID("billing"), testca.Options{})},
		{name: "foreign CA", svid: foreign.SVID(svcID("users"), testca.Options{})},
		{name: "trust-domain-only ID", svid: leafSVID(m.ca, testca.Options{URIs: []string{"spiffe://example.org"}})},
		{name: "CA flag", svid: m.ca.SVID(svcID("users"), testca.Options{IsCA: true})},
		{name: "codeSigning only", svid: m.ca.SVID(svcID("users"), testca.Options{ExtKey: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}})},
		{name: "expired", svid: m.ca.SVID(svcID("users"), testca.Options{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Minute)})},
	}
	c := newClient()
	defer c.CloseIdleConnections()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.svid.ID = svcID("users")
			m.usersSrc.Set(tc.svid, nil)
			resp, body := get(t, c, m.outURL+"/x", "users")
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d body %s, want 502", resp.StatusCode, body)
			}
		})
	}
	if hits.Load() != 0 || handshakes(m.webM, dirOutbound) != 0 {
		t.Fatalf("a wrong server was accepted: app hits %d, handshakes %v", hits.Load(), handshakes(m.webM, dirOutbound))
	}
	// The right server is accepted.
	m.usersSrc.Set(m.ca.SVID(svcID("users"), testca.Options{}), nil)
	if resp, body := get(t, c, m.outURL+"/x", "users"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}
}

// TestOutboundRouting: Host names a service (with or without .mesh and a
// port), else the longest route prefix; unknown is 404 JSON.
func TestOutboundRouting(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp(), routes: map[string]string{"/users": "users", "/orders": "orders"}})
	c := newClient()
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		name, path, host string
		code             int
		wantErr          string
	}{
		{name: "host", path: "/a", host: "users", code: 200},
		{name: "host with port", path: "/a", host: "users:15001", code: 200},
		{name: "mesh suffix", path: "/a", host: "users.mesh", code: 200},
		{name: "mesh suffix and port", path: "/a", host: "users.mesh:80", code: 200},
		{name: "upper case host", path: "/a", host: "USERS.mesh", code: 200},
		{name: "route prefix", path: "/users/42", host: "localhost", code: 200},
		{name: "route prefix exact", path: "/users", host: "127.0.0.1:15001", code: 200},
		{name: "route prefix not on boundary", path: "/usersx", host: "localhost", code: 404, wantErr: "unknown service"},
		{name: "unknown host", path: "/a", host: "billing", code: 404, wantErr: "unknown service"},
		{name: "route to service without endpoints", path: "/orders/1", host: "localhost", code: 503, wantErr: "no healthy endpoint"},
		{name: "normalized before routing", path: "/orders/../users/1", host: "localhost", code: 200},
		{name: "ambiguous path", path: "/users%2F..%2Forders", host: "localhost", code: 400, wantErr: "bad request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, m.outURL+tc.path, tc.host)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if tc.wantErr != "" {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != tc.wantErr {
					t.Fatalf("body %q, want error %q", body, tc.wantErr)
				}
			}
		})
	}
}

// TestBundleChangeDrainsPool: when the trust bundle changes so that a
// pooled peer no longer verifies, its connection is drained (the in-flight
// request completes) and the next request redials.
func TestBundleChangeDrainsPool(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	m := newMesh(t, meshOpts{app: app})
	c := newClient()
	defer c.CloseIdleConnections()
	if resp, _ := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	slow := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, m.outURL+"/slow", nil)
		req.Host = "users"
		resp, err := c.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	<-started
	ca2 := testca.New(t, td)
	both := x509bundle.FromX509Authorities(td, []*x509.Certificate{m.ca.Root(), ca2.Root()})
	// users moves to CA2 and trusts both; web trusts only CA2 now.
	m.usersSrc.Set(ca2.SVID(svcID("users"), testca.Options{}), both)
	m.webSrc.Set(nil, ca2.Bundle())
	eventually(t, "old connection marked draining", func() bool {
		for _, p := range m.out.allPeers() {
			p.mu.Lock()
			cur := p.cur
			p.mu.Unlock()
			if cur != nil {
				return false
			}
		}
		return true
	})
	close(release)
	if code := <-slow; code != 200 {
		t.Fatalf("in-flight request during drain: status %d", code)
	}
	if resp, body := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != 200 {
		t.Fatalf("after rotation: status %d %s", resp.StatusCode, body)
	}
	if got := handshakes(m.webM, dirOutbound); got != 2 {
		t.Fatalf("outbound handshakes = %v, want 2 (one redial)", got)
	}
	eventually(t, "drained connection closed", func() bool { return counterValue(m.webM.upstreams) == 1 })
}

// TestRetryIdempotentOnly: a dead endpoint is skipped by a retry for GET;
// a POST is not retried.
func TestRetryIdempotentOnly(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp(), outTweak: func(c *OutboundConfig) {
		c.RandIntN = func(int) int { return 0 } // P2C picks the first candidate
	}})
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	peers, err := NewStaticPeers([]Endpoint{
		{Service: "users", ID: svcID("users"), Addr: deadAddr},
		{Service: "users", ID: svcID("users"), Addr: m.in.Addr().String()},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.out.cfg.Peers = peers
	c := newClient()
	defer c.CloseIdleConnections()
	if resp, body := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != 200 {
		t.Fatalf("GET: status %d %s, want 200 after a retry", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, m.outURL+"/a", strings.NewReader("x"))
	req.Host = "users"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("POST: status %d, want 502 (no retry)", resp.StatusCode)
	}
}

// TestPoolRenewsBeforeExpiry: a pooled connection is replaced before the
// SVID it was opened with expires (fake clock on the outbound side); the old
// one is drained, not cut.
func TestPoolRenewsBeforeExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	m := newMesh(t, meshOpts{app: echoApp(), outTweak: func(c *OutboundConfig) {
		c.Now = clk.Now
		c.RenewBefore = 5 * time.Minute
	}})
	c := newClient()
	defer c.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		if resp, _ := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if got := handshakes(m.webM, dirOutbound); got != 1 {
		t.Fatalf("handshakes = %v, want 1", got)
	}
	// The test SVIDs live one hour: at 55m the connection must be renewed.
	clk.Advance(55*time.Minute + time.Second)
	m.webSrc.Set(m.ca.SVID(svcID("web"), testca.Options{NotAfter: time.Now().Add(3 * time.Hour)}), nil)
	m.usersSrc.Set(m.ca.SVID(svcID("users"), testca.Options{NotAfter: time.Now().Add(3 * time.Hour)}), nil)
	if resp, _ := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := handshakes(m.webM, dirOutbound); got != 2 {
		t.Fatalf("handshakes = %v, want 2 (renewed)", got)
	}
	eventually(t, "old connection drained", func() bool { return counterValue(m.webM.upstreams) == 1 })
}

// TestRequestTimeout: past --request-timeout the caller gets 504 JSON, on
// the outbound side (peer too slow) and on the inbound side (app too slow).
func TestRequestTimeout(t *testing.T) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	for _, side := range []string{"outbound", "inbound"} {
		t.Run(side, func(t *testing.T) {
			opts := meshOpts{app: app}
			if side == "outbound" {
				opts.outTweak = func(c *OutboundConfig) { c.RequestTimeout = 50 * time.Millisecond }
			} else {
				opts.inTweak = func(c *InboundConfig) { c.RequestTimeout = 50 * time.Millisecond }
			}
			m := newMesh(t, opts)
			c := newClient()
			defer c.CloseIdleConnections()
			resp, body := get(t, c, m.outURL+"/slow", "users")
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("status %d %s, want 504", resp.StatusCode, body)
			}
			want := map[string]string{"outbound": "upstream timeout", "inbound": "app timeout"}[side]
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != want {
				t.Fatalf("body %q, want error %q", body, want)
			}
		})
	}
}

// TestCallerGoneCancelsApp: when the caller gives up, the cancellation
// crosses both agents (outbound: the HTTP/2 stream is reset; inbound: the
// request context ends and the app connection is aborted) and reaches
// the app's request context.
func TestCallerGoneCancelsApp(t *testing.T) {
	arrived, gone := make(chan struct{}, 1), make(chan struct{}, 1)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		gone <- struct{}{}
	})
	m := newMesh(t, meshOpts{app: app})
	c := newClient()
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.outURL+"/wait", nil)
	req.Host = "users"
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the app")
	}
	cancel()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the app's request context did not end after the caller left")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller's error %v, want context.Canceled", err)
	}
}
