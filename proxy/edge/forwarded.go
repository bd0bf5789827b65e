package edge

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"
)

// meshHeaders are headers that carry mesh identity or routing decisions
// inside the mesh. They are meaningful only when set by an agent, so the
// edge removes them from every outside request.
var meshHeaders = []string{
	"X-Forwarded-Client-Cert",
	"X-Client-Cert",
	"X-Ssl-Client-Cert",
	"X-Spiffe-Id",
	"X-Envoy-Peer-Metadata",
	"X-Envoy-Peer-Metadata-Id",
}

// hopHeaders are connection-specific (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Proxy-Authorization", "Proxy-Authenticate",
}

// dropOutside holds meshHeaders and hopHeaders (canonical keys).
var dropOutside = func() map[string]bool {
	m := make(map[string]bool, len(meshHeaders)+len(hopHeaders))
	for _, n := range append(append([]string(nil), meshHeaders...), hopHeaders...) {
		m[n] = true
	}
	return m
}()

// SanitizeOutside removes from an outside request every header that could
// carry a mesh identity (including any X-Meshguard-* header), the hop-by-hop
// headers and the headers named in Connection. Names compare without
// case, whether or not h's keys are canonical. One pass over h: this runs
// on every edge request.
func SanitizeOutside(h http.Header) {
	var named []string // listed in Connection
	for name, vv := range h {
		key := http.CanonicalHeaderKey(name) // no allocation when canonical already
		if key == "Connection" {
			named = append(named, vv...)
		}
		if dropOutside[key] || strings.HasPrefix(key, "X-Meshguard-") {
			delete(h, name)
		}
	}
	for _, v := range named {
		for n := range strings.SplitSeq(v, ",") {
			if n = textproto.TrimString(n); n == "" {
				continue
			}
			for name := range h {
				if strings.EqualFold(name, n) {
					delete(h, name)
				}
			}
		}
	}
}

// AppendForwarded records the client the edge saw: its IP is appended to
// X-Forwarded-For and a for=/proto=/host= element to Forwarded (RFC 7239).
// Values sent by the outside are kept, for information, but the edge's own
// element is always last: a policy that trusts only the last element can
// never be fooled by a spoofed header.
func AppendForwarded(h http.Header, remoteAddr, proto, host string) {
	ip, port, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip, port = remoteAddr, ""
	}
	vals := make([]string, 3) // one array for the three headers' values
	if prior := h["X-Forwarded-For"]; len(prior) > 0 {
		vals[0] = strings.Join(prior, ", ") + ", " + ip
	} else {
		vals[0] = ip
	}
	// The Forwarded element, built in one buffer.
	b := make([]byte, 0, 64+len(ip)+len(host))
	b = append(b, "for="...)
	v6 := strings.Contains(ip, ":") // IPv6 goes in brackets, and then must be quoted
	quoted := v6 || port != ""
	if quoted {
		b = append(b, '"')
	}
	if v6 {
		b = append(b, '[')
	}
	b = append(b, ip...)
	if v6 {
		b = append(b, ']')
	}
	if port != "" {
		b = append(b, ':')
		b = append(b, port...)
	}
	if quoted {
		b = append(b, '"')
	}
	b = append(b, ";proto="...)
	b = append(b, proto...)
	if host != "" && validToken(host) {
		b = append(b, ";host="...)
		b = append(b, quoteIfNeeded(host)...)
	}
	if prior := h["Forwarded"]; len(prior) > 0 {
		vals[1] = strings.Join(prior, ", ") + ", " + string(b)
	} else {
		vals[1] = string(b)
	}
	vals[2] = proto
	h["X-Forwarded-For"] = vals[0:1:1]
	h["Forwarded"] = vals[1:2:2]
	h["X-Forwarded-Proto"] = vals[2:3:3]
}

// validToken refuses hosts with characters that could break the header.
func validToken(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e || r == '"' || r == ',' || r == ';' || r == '\\' {
			return false
		}
	}
	return true
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, ":[]") {
		return `"` + s + `"`
	}
	return s
}
