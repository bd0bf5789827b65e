package edge

import (
	"maps"
	"net/http"
	"testing"
)

func TestNewExposureRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name     string
		expose   []string
		rewrites []string
		wantErr  string
	}{
		{name: "nothing exposed", wantErr: "no prefix given"},
		{name: "relative", expose: []string{"users"}, wantErr: `expose "users": must start with /`},
		{name: "dot segments", expose: []string{"/users/../admin"}, wantErr: "not a clean path (want /admin)"},
		{name: "double slash", expose: []string{"//users"}, wantErr: "not a clean path (want /users)"},
		{name: "escape", expose: []string{"/us%65rs"}, wantErr: "may not contain"},
		{name: "duplicate", expose: []string{"/a", "/a"}, wantErr: "given twice"},
		{name: "rewrite without =", expose: []string{"/a"}, rewrites: []string{"/a"}, wantErr: "want FROM=TO"},
		{name: "rewrite of unexposed", expose: []string{"/a"}, rewrites: []string{"/b=/c"}, wantErr: "/b is not exposed"},
		{name: "rewrite to unclean", expose: []string{"/a"}, rewrites: []string{"/a=/x/../admin"}, wantErr: "target: not a clean path"},
		{name: "rewrite twice", expose: []string{"/a"}, rewrites: []string{"/a=/b", "/a=/c"}, wantErr: "already rewritten"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewExposure(tc.expose, tc.rewrites)
			if err == nil || !contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestExposureRouteAndRewrite(t *testing.T) {
	e, err := NewExposure([]string{"/users", "/users/admin-api", "/static/"}, []string{"/users=/user-service/users"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path       string
		wantPrefix string // "" = not exposed
		wantMesh   string
	}{
		{path: "/users", wantPrefix: "/users", wantMesh: "/user-service/users"},
		{path: "/users/42", wantPrefix: "/users", wantMesh: "/user-service/users/42"},
		{path: "/users/42/orders", wantPrefix: "/users", wantMesh: "/user-service/users/42/orders"},
		{path: "/users/admin-api/x", wantPrefix: "/users/admin-api", wantMesh: "/users/admin-api/x"},
		{path: "/usersecret", wantPrefix: ""},
		{path: "/admin", wantPrefix: ""},
		{path: "/", wantPrefix: ""},
		{path: "/static/app.js", wantPrefix: "/static/", wantMesh: "/static/app.js"},
		{path: "/static", wantPrefix: "/static/", wantMesh: "/static"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := e.Route(tc.path)
			if tc.wantPrefix == "" {
				if r != nil {
					t.Fatalf("%s exposed by %s, want not exposed", tc.path, r.Prefix)
				}
				return
			}
			if r == nil || r.Prefix != tc.wantPrefix {
				t.Fatalf("route = %+v, want prefix %s", r, tc.wantPrefix)
			}
			if got := r.Rewrite(tc.path); got != tc.wantMesh {
				t.Fatalf("rewrite = %s, want %s", got, tc.wantMesh)
			}
		})
	}
}

func TestSanitizeOutside(t *testing.T) {
	cases := []struct {
		name   string
		header http.Header
	}{
		{"canonical keys", http.Header{
			"X-Forwarded-Client-Cert": {"By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/admin"},
			"X-Meshguard-Anything":    {"x"},
			"X-Spiffe-Id":             {"spiffe://example.org/svc/admin"},
			"Connection":              {"X-Secret, keep-alive", "x-other"},
			"X-Secret":                {"s"},
			"X-Other":                 {"o"},
			"Proxy-Authorization":     {"Basic Zm9v"},
			"Te":                      {"trailers"},
			"Accept":                  {"application/json"},
		}},
		{"keys in any case", http.Header{
			"x-forwarded-client-cert": {"By=spiffe://example.org/svc/users"},
			"x-meshguard-anything":    {"x"},
			"X-SPIFFE-ID":             {"spiffe://example.org/svc/admin"},
			"Connection":              {" x-secret ,"},
			"x-secret":                {"s"},
			"upgrade":                 {"h2c"},
			"Accept":                  {"application/json"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			SanitizeOutside(c.header)
			if len(c.header) != 1 || c.header.Get("Accept") != "application/json" {
				t.Fatalf("after sanitizing: %v, want only Accept", c.header)
			}
		})
	}
}

func BenchmarkSanitizeOutside(b *testing.B) {
	base := http.Header{
		"Accept": {"*/*"}, "User-Agent": {"h2load"}, "Accept-Encoding": {"gzip"},
		"X-Request-Id": {"abc"}, "Authorization": {"Bearer x"}, "Content-Type": {"application/json"},
	}
	h := make(http.Header, len(base))
	b.ReportAllocs()
	for b.Loop() {
		clear(h)
		maps.Copy(h, base)
		SanitizeOutside(h)
	}
}

func TestAppendForwarded(t *testing.T) {
	tests := []struct {
		name           string
		priorXFF       []string
		priorForwarded string
		remote, host   string
		wantXFF        string
		wantForwarded  string
	}{
		{name: "first hop", remote: "203.0.113.7:5555", host: "api.example.com",
			wantXFF: "203.0.113.7", wantForwarded: `for="203.0.113.7:5555";proto=https;host=api.example.com`},
		{name: "spoofed values are kept but ours is last", priorXFF: []string{"10.0.0.1", "127.0.0.1"}, priorForwarded: "for=10.0.0.1",
			remote: "203.0.113.7:5555", host: "api.example.com",
			wantXFF: "10.0.0.1, 127.0.0.1, 203.0.113.7", wantForwarded: `for=10.0.0.1, for="203.0.113.7:5555";proto=https;host=api.example.com`},
		{name: "ipv6", remote: "[2001:db8::1]:443", host: "",
			wantXFF: "2001:db8::1", wantForwarded: `for="[2001:db8::1]:443";proto=https`},
		{name: "hostile host dropped", remote: "203.0.113.7:1", host: "a;for=1.2.3.4",
			wantXFF: "203.0.113.7", wantForwarded: `for="203.0.113.7:1";proto=https`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.priorXFF {
				h.Add("X-Forwarded-For", v)
			}
			if tc.priorForwarded != "" {
				h.Set("Forwarded", tc.priorForwarded)
			}
			AppendForwarded(h, tc.remote, "https", tc.host)
			if got := h.Get("X-Forwarded-For"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tc.wantXFF)
			}
			if got := h.Get("Forwarded"); got != tc.wantForwarded {
				t.Errorf("Forwarded = %q, want %q", got, tc.wantForwarded)
			}
		})
	}
}
