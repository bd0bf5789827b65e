package proxy

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// headerXFCC is Envoy's X-Forwarded-Client-Cert, set by the inbound side.
const headerXFCC = "X-Forwarded-Client-Cert"

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1 plus the
// legacy ones; they never cross a meshguard hop and never reach the policy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Http2-Settings",
}

// stripHopByHop removes hop-by-hop headers (and the headers that Connection
// names) from h, and reports whether the caller asked for trailers (TE:
// trailers), which gRPC needs on the next hop.
func stripHopByHop(h http.Header) (teTrailers bool) {
	if te, ok := h["Te"]; ok {
		teTrailers = httpguts.HeaderValuesContainsToken(te, "trailers")
	}
	for _, v := range h["Connection"] {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = textTrim(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	return teTrailers
}

func textTrim(s string) string { return strings.Trim(s, " \t") }

// lowerNames caches lower-cased canonical header names so that building the
// policy input does not allocate a new name per header per request. It is
// bounded: past maxLowerNames entries names are lowered without caching, so
// hostile clients cannot grow it.
type lowerNames struct {
	m sync.Map // string -> string
	n atomic.Int32
}

const maxLowerNames = 1024

func (l *lowerNames) get(name string) string {
	if v, ok := l.m.Load(name); ok {
		return v.(string)
	}
	low := strings.ToLower(name)
	if l.n.Load() < maxLowerNames {
		if _, loaded := l.m.LoadOrStore(name, low); !loaded {
			l.n.Add(1)
		}
	}
	return low
}

// inputHeaders flattens h for the policy input: lower-case names, multiple
// values joined with ", " (RFC 9110 field combination).
func (l *lowerNames) inputHeaders(h http.Header) map[string]string {
	m := make(map[string]string, len(h))
	for k, vs := range h {
		switch len(vs) {
		case 0:
			m[l.get(k)] = ""
		case 1:
			m[l.get(k)] = vs[0]
		default:
			m[l.get(k)] = strings.Join(vs, ", ")
		}
	}
	return m
}
