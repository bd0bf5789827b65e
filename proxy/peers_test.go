package proxy

import (
	"strings"
	"testing"
)

func TestParsePeer(t *testing.T) {
	tests := []struct {
		name, in string
		want     Endpoint
		wantErr  string
	}{
		{name: "valid", in: "users=spiffe://example.org/svc/users@127.0.0.1:15443",
			want: Endpoint{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:15443"}},
		{name: "ipv6", in: "users=spiffe://example.org/svc/users@[::1]:15443",
			want: Endpoint{Service: "users", ID: svcID("users"), Addr: "[::1]:15443"}},
		{name: "hostname", in: "a-1=spiffe://example.org/svc/a-1@users.internal:8443",
			want: Endpoint{Service: "a-1", ID: svcID("a-1"), Addr: "users.internal:8443"}},
		{name: "empty", in: "", wantErr: "want SERVICE=SPIFFE_ID@HOST:PORT"},
		{name: "no equals", in: "spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "want SERVICE=SPIFFE_ID@HOST:PORT"},
		{name: "empty service", in: "=spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "service name must be 1-63 characters"},
		{name: "upper-case service", in: "Users=spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "only a-z, 0-9 and '-' allowed"},
		{name: "service with dot", in: "users.mesh=spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "only a-z, 0-9 and '-' allowed"},
		{name: "service leading dash", in: "-users=spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "must not start or end with '-'"},
		{name: "service too long", in: strings.Repeat("a", 64) + "=spiffe://example.org/svc/users@127.0.0.1:1", wantErr: "service name must be 1-63 characters"},
		{name: "no address", in: "users=spiffe://example.org/svc/users", wantErr: "missing @HOST:PORT"},
		{name: "not spiffe", in: "users=https://example.org/svc/users@127.0.0.1:1", wantErr: "SPIFFE ID: scheme is missing or invalid"},
		{name: "trust domain only", in: "users=spiffe://example.org@127.0.0.1:1", wantErr: "names a trust domain, not a workload"},
		{name: "id with query", in: "users=spiffe://example.org/svc/users?x=1@127.0.0.1:1", wantErr: "SPIFFE ID:"},
		{name: "id with userinfo", in: "users=spiffe://evil@example.org/svc/users@127.0.0.1:1", wantErr: "SPIFFE ID:"},
		{name: "id with dot segment", in: "users=spiffe://example.org/svc/../admin@127.0.0.1:1", wantErr: "SPIFFE ID:"},
		{name: "no port", in: "users=spiffe://example.org/svc/users@127.0.0.1", wantErr: "address: address 127.0.0.1: missing port in address"},
		{name: "empty host", in: "users=spiffe://example.org/svc/users@:15443", wantErr: "invalid host"},
		{name: "port zero", in: "users=spiffe://example.org/svc/users@127.0.0.1:0", wantErr: "port must be 1-65535"},
		{name: "port too big", in: "users=spiffe://example.org/svc/users@127.0.0.1:65536", wantErr: "port must be 1-65535"},
		{name: "port name", in: "users=spiffe://example.org/svc/users@127.0.0.1:https", wantErr: "port must be 1-65535"},
		{name: "port sign", in: "users=spiffe://example.org/svc/users@127.0.0.1:+80", wantErr: "port must be 1-65535"},
		{name: "host with path", in: "users=spiffe://example.org/svc/users@evil/x:80", wantErr: "invalid host"},
		{name: "trailing garbage", in: "users=spiffe://example.org/svc/users@127.0.0.1:80 x", wantErr: "port must be 1-65535"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePeer(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePeer(%q) err = %v, want containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePeer(%q): %v", tc.in, err)
			}
			if got.Service != tc.want.Service || got.ID != tc.want.ID || got.Addr != tc.want.Addr {
				t.Fatalf("ParsePeer(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParsePeer(f *testing.F) {
	f.Add("users=spiffe://example.org/svc/users@127.0.0.1:15443")
	f.Add("a=spiffe://x/y@[::1]:1")
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParsePeer(s)
		if err != nil {
			return
		}
		if ValidServiceName(ep.Service) != nil || ep.ID.Path() == "" {
			t.Fatalf("accepted %q as %+v", s, ep)
		}
	})
}

func TestStaticPeersRoute(t *testing.T) {
	p, err := NewStaticPeers(nil, map[string]string{"/users": "users", "/users/admin": "admin", "/": "root", "/api/": "api"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/users": "users", "/users/42": "users", "/usersx": "root", "/users/admin/x": "admin",
		"/users/administrator": "users", "/api/v1": "api", "/api": "root", "/": "root",
	} {
		if got, ok := p.Route(path); !ok || got != want {
			t.Errorf("Route(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
	if _, err := NewStaticPeers(nil, map[string]string{"users": "users"}); err == nil {
		t.Error("route without leading slash accepted")
	}
	empty, _ := NewStaticPeers(nil, nil)
	if _, ok := empty.Route("/x"); ok {
		t.Error("empty table routed")
	}
}
