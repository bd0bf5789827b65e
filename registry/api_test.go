package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// stores runs f against a bolt-backed and an etcd-backed API.
func stores(t *testing.T, f func(t *testing.T, st registry.Store)) {
	t.Run("bolt", func(t *testing.T) { f(t, openBolt(t, clock.NewFake(time.Now()))) })
	t.Run("etcd", func(t *testing.T) { f(t, openEtcd(t, newEtcdPrefix())) })
}

// TestTwoReplicasOneEtcd: a registration made through one API replica shows
// up in a watch served by another replica on the same etcd.
func TestTwoReplicasOneEtcd(t *testing.T) {
	ca := testca.New(t, td)
	prefix := newEtcdPrefix()
	a := serve(t, ca, openEtcd(t, prefix))
	b := serve(t, ca, openEtcd(t, prefix))

	w, err := registry.NewWatcher(registry.WatcherConfig{Client: b.client(svcID("web")), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	got, err := a.client(svcID("users")).Register(ctx, reg("users", "10.0.0.1:15443", "/users"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b's watch to show the entry", func() bool {
		return w.Table().Revision() >= got.Revision && len(w.Table().Endpoints("users")) == 1
	})
	if svc, ok := w.Table().Route("/users/42"); !ok || svc != "users" {
		t.Fatalf("Route(/users/42) = %q, %v", svc, ok)
	}
	// And a deregistration through b reaches the same watch.
	if err := b.client(svcID("users")).Deregister(ctx, got.Key()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deregistration to reach the watch", func() bool { return w.Table().Len() == 0 })
}

func listRaw(t *testing.T, c *registry.Client) registry.Snapshot {
	t.Helper()
	s, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Entries {
		s.Entries[i].Expires = time.Time{}
	}
	return s
}

// TestRefusedWritesChangeNothing: forged identities get 403, a route owned
// by another identity gets 409, and the registry is left as it was.
func TestRefusedWritesChangeNothing(t *testing.T) {
	stores(t, func(t *testing.T, st registry.Store) {
		m := serve(t, testca.New(t, td), st)
		ctx := context.Background()
		users := m.client(svcID("users"))
		if _, err := users.Register(ctx, reg("users", "10.0.0.1:15443", "/users", "/api")); err != nil {
			t.Fatal(err)
		}
		web := m.client(svcID("web"))
		before := listRaw(t, web)

		forgedID := reg("users", "10.0.0.9:15443", "/x")
		wrongService := reg("web", "10.0.0.9:15443")
		wrongService.SPIFFEID = svcID("users")
		other := registry.Registration{Service: "users", SPIFFEID: svcID("web"), Address: "10.0.0.9:15443"}
		tests := []struct {
			name       string
			client     *registry.Client
			do         func(c *registry.Client) error
			wantStatus int
			wantMsg    string
		}{
			{"register another service's entry", web, func(c *registry.Client) error { _, err := c.Register(ctx, forgedID); return err },
				403, `service "users" may only be written by spiffe://example.org/svc/users, not by spiffe://example.org/svc/web`},
			{"own service, another spiffe_id", web, func(c *registry.Client) error { _, err := c.Register(ctx, wrongService); return err },
				403, `spiffe_id "spiffe://example.org/svc/users" is not the caller's identity spiffe://example.org/svc/web`},
			{"another service, own spiffe_id", web, func(c *registry.Client) error { _, err := c.Register(ctx, other); return err },
				403, `service "users" may only be written by spiffe://example.org/svc/users, not by spiffe://example.org/svc/web`},
			{"renew another's entry", web, func(c *registry.Client) error {
				_, err := c.Renew(ctx, registry.Key{Service: "users", Address: "10.0.0.1:15443"})
				return err
			}, 403, `service "users" may only be written by spiffe://example.org/svc/users, not by spiffe://example.org/svc/web`},
			{"deregister another's entry", web, func(c *registry.Client) error {
				return c.Deregister(ctx, registry.Key{Service: "users", Address: "10.0.0.1:15443"})
			}, 403, `service "users" may only be written by spiffe://example.org/svc/users, not by spiffe://example.org/svc/web`},
			{"route owned by another identity", web, func(c *registry.Client) error {
				_, err := c.Register(ctx, reg("web", "10.0.0.2:15443", "/web", "/api"))
				return err
			}, 409, `route prefix "/api" is owned by spiffe://example.org/svc/users`},
			{"trust-domain ID cannot write", m.client("spiffe://example.org/svc/users/extra"), func(c *registry.Client) error {
				_, err := c.Register(ctx, reg("users", "10.0.0.1:15443"))
				return err
			}, 403, `service "users" may only be written by spiffe://example.org/svc/users, not by spiffe://example.org/svc/users/extra`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do(tt.client)
				var apiErr *registry.APIError
				if !errors.As(err, &apiErr) || apiErr.Status != tt.wantStatus || apiErr.Message != tt.wantMsg {
					t.Fatalf("err = %v, want %d %q", err, tt.wantStatus, tt.wantMsg)
				}
				if tt.wantStatus == 409 && (!errors.Is(err, registry.ErrRouteConflict) || apiErr.Route != "/api" || apiErr.Owner != svcID("users")) {
					t.Fatalf("409 body = %+v", apiErr)
				}
				if after := listRaw(t, web); !reflect.DeepEqual(after, before) {
					t.Fatalf("registry changed:\n%+v\nwant\n%+v", after, before)
				}
			})
		}
	})
}

// TestRenewDeregister covers the owner's write cycle.
func TestRenewDeregister(t *testing.T) {
	stores(t, func(t *testing.T, st registry.Store) {
		m := serve(t, testca.New(t, td), st)
		ctx := context.Background()
		c := m.client(svcID("users"))
		r := reg("users", "[::1]:15443", "/users")
		r.Weight, r.TTLSeconds = 7, 60
		e, err := c.Register(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if e.Weight != 7 || e.Expires.IsZero() || e.Revision == 0 {
			t.Fatalf("registered %+v", e)
		}
		if _, err := c.Renew(ctx, e.Key()); err != nil {
			t.Fatal(err)
		}
		if err := c.Deregister(ctx, e.Key()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Renew(ctx, e.Key()); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("renew after deregister = %v, want ErrNotFound", err)
		}
		if err := c.Deregister(ctx, e.Key()); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("second deregister = %v, want ErrNotFound", err)
		}
	})
}

// TestLeaseExpiryThroughAPI: an entry whose agent stops renewing disappears
// (fake clock for bolt, a real two-second etcd lease).
func TestLeaseExpiryThroughAPI(t *testing.T) {
	ctx := context.Background()
	t.Run("bolt", func(t *testing.T) {
		clock := clock.NewFake(time.Now())
		st := openBolt(t, clock)
		m := serve(t, testca.New(t, td), st)
		c := m.client(svcID("users"))
		if _, err := c.Register(ctx, reg("users", "10.0.0.1:15443", "/users")); err != nil {
			t.Fatal(err)
		}
		clock.Advance(registry.DefaultTTL - time.Second)
		if n, _ := st.Expire(ctx); n != 0 {
			t.Fatalf("expired %d entries before the TTL", n)
		}
		clock.Advance(time.Second)
		if n, _ := st.Expire(ctx); n != 1 {
			t.Fatalf("expired %d entries at the TTL, want 1", n)
		}
		if s := listRaw(t, c); len(s.Entries) != 0 {
			t.Fatalf("entries after expiry: %+v", s.Entries)
		}
	})
	t.Run("etcd", func(t *testing.T) {
		m := serve(t, testca.New(t, td), openEtcd(t, newEtcdPrefix()))
		c := m.client(svcID("users"))
		r := reg("users", "10.0.0.1:15443", "/users")
		r.TTLSeconds = 2
		if _, err := c.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the etcd lease to expire", func() bool { return len(listRaw(t, c).Entries) == 0 })
		// The route is free for someone else.
		if _, err := m.client(svcID("web")).Register(ctx, reg("web", "10.0.0.2:15443", "/users")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHostileInput: every malformed request gets a 4xx JSON error and
// changes nothing.
func TestHostileInput(t *testing.T) {
	m := serve(t, testca.New(t, td), openBolt(t, clock.NewFake(time.Now())))
	users := m.httpClient(svcID("users"))
	anon := m.httpClient("")
	valid := `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:15443"}`
	tests := []struct {
		name       string
		client     *http.Client
		method     string
		path       string
		body       string
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{"no client certificate", anon, "GET", "/v1/registry/entries", "", 401, "unauthenticated", "a client certificate (X.509-SVID) signed by the CA is required"},
		{"no client certificate write", anon, "POST", "/v1/registry/entries", valid, 401, "unauthenticated", "a client certificate (X.509-SVID) signed by the CA is required"},
		{"bad JSON", users, "POST", "/v1/registry/entries", `{"service":`, 400, "bad_request", "invalid JSON body: unexpected EOF"},
		{"not an object", users, "POST", "/v1/registry/entries", `[1]`, 400, "bad_request", "invalid JSON body: json: cannot unmarshal array into Go value of type registry.Registration"},
		{"unknown field", users, "POST", "/v1/registry/entries", `{"service":"users","owner":"x"}`, 400, "bad_request", `invalid JSON body: json: unknown field "owner"`},
		{"trailing data", users, "POST", "/v1/registry/entries", valid + `{}`, 400, "bad_request", "invalid JSON body: data after the object"},
		{"huge body", users, "POST", "/v1/registry/entries", `{"service":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "too_large", "request body larger than 65536 bytes"},
		{"service traversal", users, "POST", "/v1/registry/entries", `{"service":"../users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:15443"}`, 400, "bad_request", `invalid service "../users": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{"route not normalized", users, "POST", "/v1/registry/entries", `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:15443","routes":["/a/../b"]}`, 400, "bad_request", `invalid route "/a/../b": not a normalized path (want "/b")`},
		{"route relative", users, "POST", "/v1/registry/entries", `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:15443","routes":["users"]}`, 400, "bad_request", `invalid route "users": must start with /`},
		{"bad address", users, "POST", "/v1/registry/entries", `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1"}`, 400, "bad_request", `invalid address "10.0.0.1": want host:port`},
		{"weight too big", users, "POST", "/v1/registry/entries", `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:1","weight":1001}`, 400, "bad_request", "invalid weight 1001: want 1..1000"},
		{"ttl too short", users, "POST", "/v1/registry/entries", `{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:1","ttl_seconds":1}`, 400, "bad_request", "invalid ttl_seconds 1: want 2..300"},
		{"dot-dot in path", users, "POST", "/v1/registry/entries/../entries/users/10.0.0.1:1/renew", "", 400, "bad_request", "request path is not normalized"},
		{"encoded slash in path", users, "DELETE", "/v1/registry/entries/users%2F..%2Fweb/10.0.0.1:1", "", 400, "bad_request", "request path is not normalized"},
		{"double slash", users, "DELETE", "/v1/registry/entries//users/10.0.0.1:1", "", 400, "bad_request", "request path is not normalized"},
		{"bad service in path", users, "DELETE", "/v1/registry/entries/Users/10.0.0.1:1", "", 400, "bad_request", `invalid service "Users": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{"encoded dot-dot service", users, "DELETE", "/v1/registry/entries/%2e%2e/10.0.0.1:1", "", 400, "bad_request", "request path is not normalized"},
		{"bad address in path", users, "DELETE", "/v1/registry/entries/users/nope", "", 400, "bad_request", `invalid address "nope": want host:port`},
		{"bad since", users, "GET", "/v1/registry/watch?since=-1", "", 400, "bad_request", `invalid since "-1": want a revision >= 0`},
		{"unknown endpoint", users, "GET", "/v1/registry/secrets", "", 404, "not_found", "no registry endpoint GET /v1/registry/secrets"},
		{"wrong method", users, "PUT", "/v1/registry/entries", valid, 405, "method_not_allowed", "no registry endpoint PUT /v1/registry/entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, m.srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tt.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var e registry.APIError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("body %q is not JSON: %v", b, err)
			}
			if resp.StatusCode != tt.wantStatus || e.Code != tt.wantCode || e.Message != tt.wantMsg {
				t.Fatalf("got %d %q %q, want %d %q %q", resp.StatusCode, e.Code, e.Message, tt.wantStatus, tt.wantCode, tt.wantMsg)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	snap := listRaw(t, m.client(svcID("users")))
	if len(snap.Entries) != 0 || snap.Revision != 0 {
		t.Fatalf("hostile requests changed the registry: %+v", snap)
	}
}

// TestHostileCertificates: certificates that chain to the CA but break the
// SVID rules get 401, another trust domain's ID gets 403, and a certificate
// from another CA never completes the handshake.
func TestHostileCertificates(t *testing.T) {
	ca := testca.New(t, td)
	m := serve(t, ca, openBolt(t, clock.NewFake(time.Now())))
	id := spiffeid.RequireFromString(svcID("users"))
	tests := []struct {
		name       string
		svid       func() *x509svid.SVID
		wantStatus int
		wantMsg    string
	}{
		{"two URI SANs", func() *x509svid.SVID {
			return ca.SVID(id, testca.Options{URIs: []string{svcID("users"), svcID("web")}})
		}, 401, "svid check: certificate has 2 URI SANs, want exactly one"},
		{"no URI SAN", func() *x509svid.SVID { return ca.SVID(id, testca.Options{URIs: []string{}}) }, 401, "svid check: certificate has 0 URI SANs, want exactly one"},
		{"trust domain ID", func() *x509svid.SVID {
			return ca.SVID(id, testca.Options{URIs: []string{"spiffe://example.org"}})
		}, 401, "svid check: spiffe://example.org is a trust domain ID, not a workload ID"},
		{"leaf is a CA", func() *x509svid.SVID { return ca.SVID(id, testca.Options{IsCA: true}) }, 401, "svid check: leaf certificate is a CA"},
		{"other trust domain", func() *x509svid.SVID {
			return ca.SVID(id, testca.Options{URIs: []string{"spiffe://other.org/svc/users"}})
		}, 403, "caller spiffe://other.org/svc/users is not in trust domain example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := rawClient(t, tt.svid())
			resp, err := hc.Post(m.srv.URL+"/v1/registry/entries", "application/json", strings.NewReader(`{"service":"users","spiffe_id":"spiffe://example.org/svc/users","address":"10.0.0.1:15443"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e registry.APIError
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus || e.Message != tt.wantMsg {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, e.Message, tt.wantStatus, tt.wantMsg)
			}
		})
	}
	t.Run("another CA", func(t *testing.T) {
		other := testca.New(t, td)
		hc := rawClient(t, other.SVID(id, testca.Options{}))
		resp, err := hc.Get(m.srv.URL + "/v1/registry/entries")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a certificate of another CA got %d, want a failed handshake", resp.StatusCode)
		}
	})
	if s := listRaw(t, m.client(svcID("users"))); len(s.Entries) != 0 {
		t.Fatalf("hostile certificates registered %+v", s.Entries)
	}
}

// rawClient presents svid as is and does not check the server (the server
// side is under test).
func rawClient(t *testing.T, svid *x509svid.SVID) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates:       []tls.Certificate{testca.TLSCertificate(svid)},
		InsecureSkipVerify: true, // the server is not what this test checks
		MinVersion:         tls.VersionTLS13,
	}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestEndpointLimit: one identity cannot grow its service without bound.
func TestEndpointLimit(t *testing.T) {
	stores(t, func(t *testing.T, st registry.Store) {
		m := serve(t, testca.New(t, td), st)
		h, err := registry.NewHandler(registry.HandlerConfig{Store: st, TrustDomain: td, Logger: quietLogger(), MaxEndpoints: 2})
		if err != nil {
			t.Fatal(err)
		}
		m.srv.Config.Handler = h
		ctx := context.Background()
		c := m.client(svcID("users"))
		for _, addr := range []string{"10.0.0.1:1", "10.0.0.2:1"} {
			if _, err := c.Register(ctx, reg("users", addr)); err != nil {
				t.Fatal(err)
			}
		}
		_, err = c.Register(ctx, reg("users", "10.0.0.3:1"))
		var apiErr *registry.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != 429 || apiErr.Message != `service "users" already has 2 endpoints, the most the registry accepts` {
			t.Fatalf("third endpoint: %v", err)
		}
		// Re-registering an existing endpoint is still fine.
		if _, err := c.Register(ctx, reg("users", "10.0.0.2:1", "/users")); err != nil {
			t.Fatal(err)
		}
		if n := len(listRaw(t, c).Entries); n != 2 {
			t.Fatalf("%d entries, want 2", n)
		}
	})
}
