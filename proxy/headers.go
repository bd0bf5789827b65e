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

// isHopHeader reports whether k (a canonical key) is a hop-by-hop header
// of RFC 9110 section 7.6.1 or a legacy one; they never cross a meshguard
// hop and never reach the policy.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Http2-Settings":
		return true
	}
	return false
}

// stripHopByHop removes hop-by-hop headers (and the headers that Connection
// names) from h, and reports whether the caller asked for trailers (TE:
// trailers), which gRPC needs on the next hop. One pass over h: deleting
// each hop-by-hop name instead hashed ten keys, most of them absent, four
// times per request along a two-agent path (2-3% of an agent's CPU).
func stripHopByHop(h http.Header) (teTrailers bool) {
	var connection []string
	for k, vv := range h {
		if !isHopHeader(k) {
			continue
		}
		switch k {
		case "Te":
			teTrailers = httpguts.HeaderValuesContainsToken(vv, "trailers")
		case "Connection":
			connection = vv
		}
		delete(h, k)
	}
	for _, v := range connection {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = textTrim(sf); sf != "" {
				h.Del(sf)
			}
		}
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
