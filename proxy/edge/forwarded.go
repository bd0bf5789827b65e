package edge

import (
	"net"
	"net/http"
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

// SanitizeOutside removes from an outside request every header that could
// carry a mesh identity (including any X-Meshguard-* header), the hop-by-hop
// headers and the headers named in Connection.
func SanitizeOutside(h http.Header) {
	for _, name := range h.Values("Connection") {
		for _, n := range strings.Split(name, ",") {
			if n = strings.TrimSpace(n); n != "" {
				h.Del(n)
			}
		}
	}
	for _, n := range hopHeaders {
		h.Del(n)
	}
	for _, n := range meshHeaders {
		h.Del(n)
	}
	for name := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Meshguard-") {
			delete(h, name)
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
	if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
		h.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+ip)
	} else {
		h.Set("X-Forwarded-For", ip)
	}
	node := ip
	if strings.Contains(ip, ":") { // IPv6 goes in brackets, and then must be quoted
		node = "[" + ip + "]"
	}
	if port != "" {
		node += ":" + port
	}
	if strings.ContainsAny(node, ":[]") {
		node = `"` + node + `"`
	}
	elem := "for=" + node + ";proto=" + proto
	if host != "" && validToken(host) {
		elem += ";host=" + quoteIfNeeded(host)
	}
	if prior := h.Values("Forwarded"); len(prior) > 0 {
		h.Set("Forwarded", strings.Join(prior, ", ")+", "+elem)
	} else {
		h.Set("Forwarded", elem)
	}
	h.Set("X-Forwarded-Proto", proto)
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
