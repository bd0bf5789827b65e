package registry_test

import (
	"strings"
	"testing"

	"github.com/meshguard/meshguard/registry"
)

func TestEntryValidate(t *testing.T) {
	base := func() registry.Entry {
		return registry.Entry{Service: "users", SPIFFEID: "spiffe://example.org/svc/users", Address: "10.0.0.1:15443",
			Routes: []string{"/users", "/api/v1"}, Labels: map[string]string{"version": "v2"}}
	}
	tests := []struct {
		name    string
		mutate  func(e *registry.Entry)
		wantErr string
	}{
		{name: "valid", mutate: func(e *registry.Entry) {}},
		{name: "DNS host", mutate: func(e *registry.Entry) { e.Address = "users-1.mesh.local:15443" }},
		{name: "IPv6", mutate: func(e *registry.Entry) { e.Address = "[fd00::1]:15443" }},
		{name: "root route", mutate: func(e *registry.Entry) { e.Routes = []string{"/"} }},
		{name: "empty service", mutate: func(e *registry.Entry) { e.Service = "" }, wantErr: "invalid service: empty"},
		{name: "upper-case service", mutate: func(e *registry.Entry) { e.Service = "Users" }, wantErr: `invalid service "Users": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{name: "traversal service", mutate: func(e *registry.Entry) { e.Service = ".." }, wantErr: `invalid service "..": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{name: "slash in service", mutate: func(e *registry.Entry) { e.Service = "a/b" }, wantErr: `invalid service "a/b": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{name: "long service", mutate: func(e *registry.Entry) { e.Service = strings.Repeat("a", 64) }, wantErr: `invalid service "` + strings.Repeat("a", 64) + `": want at most 63 of [a-z0-9-], starting and ending alphanumeric`},
		{name: "bad spiffe id", mutate: func(e *registry.Entry) { e.SPIFFEID = "https://example.org/svc/users" }, wantErr: `invalid spiffe_id "https://example.org/svc/users": scheme is missing or invalid`},
		{name: "id of another service", mutate: func(e *registry.Entry) { e.SPIFFEID = "spiffe://example.org/svc/web" }, wantErr: `invalid spiffe_id "spiffe://example.org/svc/web": service "users" must be registered by spiffe://example.org/svc/users`},
		{name: "id with extra path", mutate: func(e *registry.Entry) { e.SPIFFEID = "spiffe://example.org/svc/users/x" }, wantErr: `invalid spiffe_id "spiffe://example.org/svc/users/x": service "users" must be registered by spiffe://example.org/svc/users`},
		{name: "no port", mutate: func(e *registry.Entry) { e.Address = "10.0.0.1" }, wantErr: `invalid address "10.0.0.1": want host:port`},
		{name: "port zero", mutate: func(e *registry.Entry) { e.Address = "10.0.0.1:0" }, wantErr: `invalid address "10.0.0.1:0": port must be 1..65535`},
		{name: "port name", mutate: func(e *registry.Entry) { e.Address = "10.0.0.1:https" }, wantErr: `invalid address "10.0.0.1:https": port must be 1..65535`},
		{name: "port leading zero", mutate: func(e *registry.Entry) { e.Address = "10.0.0.1:0443" }, wantErr: `invalid address "10.0.0.1:0443": port must be 1..65535`},
		{name: "empty host", mutate: func(e *registry.Entry) { e.Address = ":15443" }, wantErr: `invalid address ":15443": empty host`},
		{name: "bad host", mutate: func(e *registry.Entry) { e.Address = "a_b:1" }, wantErr: `invalid address "a_b:1": host is neither an IP address nor a DNS name`},
		{name: "route relative", mutate: func(e *registry.Entry) { e.Routes = []string{"users"} }, wantErr: `invalid route "users": must start with /`},
		{name: "route trailing slash", mutate: func(e *registry.Entry) { e.Routes = []string{"/users/"} }, wantErr: `invalid route "/users/": not a normalized path (want "/users")`},
		{name: "route dot-dot", mutate: func(e *registry.Entry) { e.Routes = []string{"/a/../admin"} }, wantErr: `invalid route "/a/../admin": not a normalized path (want "/admin")`},
		{name: "route double slash", mutate: func(e *registry.Entry) { e.Routes = []string{"//users"} }, wantErr: `invalid route "//users": not a normalized path (want "/users")`},
		{name: "route escape", mutate: func(e *registry.Entry) { e.Routes = []string{"/a%2Fb"} }, wantErr: `invalid route "/a%2Fb": must not contain %, \, ?, # or *`},
		{name: "route backslash", mutate: func(e *registry.Entry) { e.Routes = []string{`/a\b`} }, wantErr: `invalid route "/a\\b": must not contain %, \, ?, # or *`},
		{name: "route query", mutate: func(e *registry.Entry) { e.Routes = []string{"/a?b"} }, wantErr: `invalid route "/a?b": must not contain %, \, ?, # or *`},
		{name: "route space", mutate: func(e *registry.Entry) { e.Routes = []string{"/a b"} }, wantErr: `invalid route "/a b": must not contain spaces or control characters`},
		{name: "route NUL", mutate: func(e *registry.Entry) { e.Routes = []string{"/a\x00"} }, wantErr: `invalid route "/a\x00": must not contain spaces or control characters`},
		{name: "route twice", mutate: func(e *registry.Entry) { e.Routes = []string{"/a", "/a"} }, wantErr: `invalid route "/a": listed twice`},
		{name: "route too long", mutate: func(e *registry.Entry) { e.Routes = []string{"/" + strings.Repeat("a", 256)} }, wantErr: `invalid route "/` + strings.Repeat("a", 256) + `": longer than 256 bytes`},
		{name: "too many routes", mutate: func(e *registry.Entry) {
			e.Routes = nil
			for i := range 33 {
				e.Routes = append(e.Routes, "/r"+strings.Repeat("x", i))
			}
		}, wantErr: "invalid routes: 33 routes, at most 32"},
		{name: "label key", mutate: func(e *registry.Entry) { e.Labels = map[string]string{"Version": "x"} }, wantErr: `invalid label key "Version": want at most 63 of [a-z0-9._-], starting and ending alphanumeric`},
		{name: "label value long", mutate: func(e *registry.Entry) { e.Labels = map[string]string{"v": strings.Repeat("x", 129)} }, wantErr: `invalid label "v": value of 129 bytes, at most 128`},
		{name: "label control", mutate: func(e *registry.Entry) { e.Labels = map[string]string{"v": "a\nb"} }, wantErr: `invalid label "v": value has a control character`},
		{name: "too many labels", mutate: func(e *registry.Entry) {
			e.Labels = map[string]string{}
			for i := range 17 {
				e.Labels["k"+strings.Repeat("x", i)] = "v"
			}
		}, wantErr: "invalid labels: 17 labels, at most 16"},
		{name: "weight negative", mutate: func(e *registry.Entry) { e.Weight = -1 }, wantErr: "invalid weight -1: want 1..1000"},
		{name: "weight big", mutate: func(e *registry.Entry) { e.Weight = 1001 }, wantErr: "invalid weight 1001: want 1..1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base()
			tt.mutate(&e)
			e.Normalize()
			err := e.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Validate = %v\nwant %s", err, tt.wantErr)
			}
		})
	}
}

func TestNormalizeDefaults(t *testing.T) {
	e := registry.Entry{Routes: []string{"/b", "/a"}}
	e.Normalize()
	if e.Weight != registry.DefaultWeight || e.Routes[0] != "/a" {
		t.Fatalf("Normalize = %+v", e)
	}
}

func TestRouteMatches(t *testing.T) {
	tests := []struct {
		route, path string
		want        bool
	}{
		{"/api", "/api", true},
		{"/api", "/api/x", true},
		{"/api", "/apix", false},
		{"/api", "/", false},
		{"/", "/anything", true},
		{"/a/b", "/a/b/c", true},
		{"/a/b", "/a", false},
	}
	for _, tt := range tests {
		if got := registry.RouteMatches(tt.route, tt.path); got != tt.want {
			t.Errorf("RouteMatches(%q, %q) = %v", tt.route, tt.path, got)
		}
	}
}
