package proxy

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// stripReference is stripHopByHop as the RFC reads: delete every
// hop-by-hop name, and every name Connection lists.
func stripReference(h http.Header) (teTrailers bool) {
	if te, ok := h["Te"]; ok {
		teTrailers = httpguts.HeaderValuesContainsToken(te, "trailers")
	}
	for _, v := range h["Connection"] {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = strings.Trim(sf, " \t"); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings"} {
		delete(h, k)
	}
	return teTrailers
}

func TestStripHopByHop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     http.Header
		want   []string // keys left
		wantTE bool
	}{
		{"none", http.Header{"Accept": {"*/*"}, "X-A": {"1"}}, []string{"Accept", "X-A"}, false},
		{"all hop headers", http.Header{
			"Connection": {"keep-alive"}, "Proxy-Connection": {"x"}, "Keep-Alive": {"timeout=5"},
			"Proxy-Authenticate": {"x"}, "Proxy-Authorization": {"x"}, "Te": {"gzip"}, "Trailer": {"X-T"},
			"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAA"}, "X-Keep": {"1"},
		}, []string{"X-Keep"}, false},
		{"te trailers", http.Header{"Te": {"trailers"}, "X-A": {"1"}}, []string{"X-A"}, true},
		{"te trailers among others", http.Header{"Te": {"gzip, trailers"}}, nil, true},
		{"connection names headers", http.Header{"Connection": {"X-Secret, x-other ,", "Close"}, "X-Secret": {"s"}, "X-Other": {"o"}, "X-Kept": {"k"}}, []string{"X-Kept"}, false},
		{"connection names a hop header and itself", http.Header{"Connection": {"Connection, Te"}, "Te": {"trailers"}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := stripHopByHop(tc.in)
			got := slices.Sorted(maps.Keys(tc.in))
			if !slices.Equal(got, tc.want) || te != tc.wantTE {
				t.Fatalf("left %v, TE trailers %v; want %v, %v", got, te, tc.want, tc.wantTE)
			}
		})
	}
}

// TestStripHopByHopMatchesReference: random header sets give the same
// result as the reference.
func TestStripHopByHopMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "Http2-Settings", "Proxy-Authorization", "Accept", "X-A", "X-B", "Content-Type", "Authorization"}
	values := []string{"", "trailers", "X-A", "x-b, Accept", "close", " , ", "gzip, trailers", "keep-alive, X-B"}
	for i := range 5000 {
		h := http.Header{}
		for range rng.IntN(8) {
			k := names[rng.IntN(len(names))]
			h[k] = append(h[k], values[rng.IntN(len(values))])
		}
		ref := h.Clone()
		orig := h.Clone()
		te, refTE := stripHopByHop(h), stripReference(ref)
		if te != refTE || !maps.EqualFunc(h, ref, slices.Equal) {
			t.Fatalf("case %d: %q: got %q (TE %v), reference %q (TE %v)", i, orig, h, te, ref, refTE)
		}
	}
}

func BenchmarkStripHopByHop(b *testing.B) {
	base := http.Header{
		"Accept": {"*/*"}, "User-Agent": {"h2load nghttp2/1.64.0"}, "X-Forwarded-For": {"127.0.0.1"},
		"Forwarded": {`for="127.0.0.1:40112";proto=https`}, "X-Forwarded-Proto": {"https"}, "Content-Type": {"text/plain"},
	}
	for _, impl := range []struct {
		name string
		f    func(http.Header) bool
	}{{"one-pass", stripHopByHop}, {"reference", stripReference}} {
		b.Run(impl.name, func(b *testing.B) {
			h := base.Clone()
			for b.Loop() {
				impl.f(h)
			}
		})
	}
}
