package authz

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// FuzzCacheKeyInjective: two inputs share a cache key only if a policy
// could not tell them apart (equal fields; nil and empty maps alike).
// Fields are built by splitting the fuzzer's strings, so boundaries move.
func FuzzCacheKeyInjective(f *testing.F) {
	f.Add("a|b|c", "a|bc|", "k=v;x=y", "k=v;x=y")
	f.Add("web|example.org|web", "web|example.orgweb|", "ab=c", "a=bc")
	f.Add("", "|", "=;=", ";")
	f.Fuzz(func(t *testing.T, f1, f2, h1, h2 string) {
		a, b := fuzzInput(f1, h1), fuzzInput(f2, h2)
		if a.cacheKey() != b.cacheKey() && sameInput(a, b) {
			t.Fatalf("equal inputs, different keys: %+v", a)
		}
		if a.cacheKey() == b.cacheKey() && !sameInput(a, b) {
			t.Fatalf("different inputs share a key:\n%+v\n%+v", a, b)
		}
	})
}

func fuzzInput(fields, headers string) *Input {
	f := strings.Split(fields, "|")
	for len(f) < 6 {
		f = append(f, "")
	}
	in := &Input{
		Source:      Source{SPIFFEID: f[0], TrustDomain: f[1], Service: f[2]},
		Destination: Destination{SPIFFEID: f[3], Service: f[4]},
		Request:     Request{Method: f[5], Path: strings.Join(f[min(6, len(f)):], "|")},
	}
	for _, kv := range strings.Split(headers, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if in.Request.Headers == nil {
			in.Request.Headers = map[string]string{}
		}
		in.Request.Headers[k] = v
		if strings.HasPrefix(k, "q") {
			if in.Request.Query == nil {
				in.Request.Query = map[string][]string{}
			}
			in.Request.Query[k] = append(in.Request.Query[k], v)
		}
	}
	return in
}

func sameInput(a, b *Input) bool {
	return a.Source == b.Source && a.Destination == b.Destination &&
		a.Request.Method == b.Request.Method && a.Request.Path == b.Request.Path &&
		a.Request.Host == b.Request.Host && a.Request.Protocol == b.Request.Protocol &&
		maps.Equal(a.Request.Headers, b.Request.Headers) &&
		maps.EqualFunc(a.Request.Query, b.Request.Query, slices.Equal[[]string])
}
