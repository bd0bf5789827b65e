package proxy

import (
	"errors"
	"testing"
)

// pathCases is the Istio/Envoy authorization-bypass family: each target is
// normalized to exactly want (what the policy sees and the app receives) or
// refused with err.
var pathCases = []struct {
	name, target string
	want, query  string
	err          error
}{
	{name: "plain", target: "/users/42", want: "/users/42"},
	{name: "root", target: "/", want: "/"},
	{name: "dot-dot", target: "/a/../admin", want: "/admin"},
	{name: "dot-dot past root", target: "/../../admin", want: "/admin"},
	{name: "dot", target: "/./admin/.", want: "/admin/"},
	{name: "double slash", target: "//admin", want: "/admin"},
	{name: "many slashes", target: "/public///..//admin", want: "/admin"},
	{name: "trailing slash kept", target: "/admin/", want: "/admin/"},
	{name: "encoded dot-dot", target: "/public/%2e%2e/admin", want: "/admin"},
	{name: "encoded dot-dot upper", target: "/public/%2E%2E/admin", want: "/admin"},
	{name: "mixed dot-dot", target: "/public/.%2e/admin", want: "/admin"},
	{name: "encoded unreserved", target: "/%61dmin/%7Euser", want: "/admin/~user"},
	{name: "reserved escape kept, hex upper", target: "/a%3fb/%3a", want: "/a%3Fb/%3A"},
	{name: "encoded question mark stays in path", target: "/admin%3F/x", want: "/admin%3F/x"},
	{name: "encoded percent kept", target: "/a%252e%252e/admin", want: "/a%252e%252e/admin"},
	{name: "encoded slash", target: "/a%2Fb", err: ErrEncodedSlash},
	{name: "encoded slash lower", target: "/public/..%2fadmin", err: ErrEncodedSlash},
	{name: "encoded backslash", target: "/public/..%5Cadmin", err: ErrEncodedBackslash},
	{name: "backslash", target: "/public/..\\admin", err: ErrBackslash},
	{name: "encoded NUL", target: "/admin%00.html", err: ErrNUL},
	{name: "raw NUL", target: "/admin\x00", err: ErrNUL},
	{name: "control char", target: "/admin\x01", err: ErrControl},
	{name: "invalid escape", target: "/a%zz", err: ErrInvalidEscape},
	{name: "truncated escape", target: "/a%2", err: ErrInvalidEscape},
	{name: "fragment", target: "/public#/../admin", err: ErrFragment},
	{name: "fragment in query", target: "/public?x=1#frag", err: ErrFragment},
	{name: "query split", target: "/admin?/../public", want: "/admin", query: "/../public"},
	{name: "query with dot-dot not resolved", target: "/public/..?x=/admin", want: "/", query: "x=/admin"},
	{name: "empty query", target: "/admin?", want: "/admin", query: ""},
	{name: "semicolon kept", target: "/admin;x=1/../public", want: "/public"},
	{name: "semicolon segment", target: "/admin;/x", want: "/admin;/x"},
	{name: "space encoded", target: "/a b", want: "/a%20b"},
	{name: "non-ascii encoded", target: "/caf\xc3\xa9", want: "/caf%C3%A9"},
	{name: "absolute form", target: "http://users/a/../admin?x=1", want: "/admin", query: "x=1"},
	{name: "absolute form no path", target: "https://users", want: "/"},
	{name: "absolute form query only", target: "http://users?x", want: "/", query: "x"},
	{name: "asterisk", target: "*", err: ErrRequestTarget},
	{name: "empty", target: "", err: ErrRequestTarget},
	{name: "relative", target: "admin", err: ErrRequestTarget},
	{name: "other scheme", target: "ftp://users/x", err: ErrRequestTarget},
}

func TestNormalizePath(t *testing.T) {
	for _, tc := range pathCases {
		t.Run(tc.name, func(t *testing.T) {
			got, q, err := NormalizePath(tc.target)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("NormalizePath(%q) err = %v, want %v", tc.target, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || q != tc.query {
				t.Fatalf("NormalizePath(%q) = %q, %q, %v; want %q, %q", tc.target, got, q, err, tc.want, tc.query)
			}
			// Idempotent: a normalized path is a fixed point.
			again, _, err := NormalizePath(got)
			if err != nil || again != got {
				t.Fatalf("not idempotent: %q -> %q (%v)", got, again, err)
			}
		})
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, tc := range pathCases {
		f.Add(tc.target)
	}
	f.Fuzz(func(t *testing.T, target string) {
		got, _, err := NormalizePath(target)
		if err != nil {
			return
		}
		again, _, err := NormalizePath(got)
		if err != nil || again != got {
			t.Fatalf("%q -> %q -> %q (%v)", target, got, again, err)
		}
		if got[0] != '/' {
			t.Fatalf("%q -> %q: not absolute", target, got)
		}
	})
}

func BenchmarkNormalizePath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = NormalizePath("/users/42/orders?limit=10")
	}
}
