package proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParsePeer parses the static peer form SERVICE=SPIFFE_ID@HOST:PORT, e.g.
// users=spiffe://example.org/svc/users@127.0.0.1:15443. The service is a DNS
// label (lower-case letters, digits, '-'); the SPIFFE ID must name a
// workload (non-empty path); the port must be 1-65535.
func ParsePeer(s string) (Endpoint, error) {
	svc, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Endpoint{}, fmt.Errorf("parse peer %q: want SERVICE=SPIFFE_ID@HOST:PORT", s)
	}
	if err := ValidServiceName(svc); err != nil {
		return Endpoint{}, fmt.Errorf("parse peer %q: %w", s, err)
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return Endpoint{}, fmt.Errorf("parse peer %q: missing @HOST:PORT", s)
	}
	idStr, addr := rest[:at], rest[at+1:]
	id, err := spiffeid.FromString(idStr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("parse peer %q: SPIFFE ID: %w", s, err)
	}
	if id.Path() == "" {
		return Endpoint{}, fmt.Errorf("parse peer %q: SPIFFE ID %s names a trust domain, not a workload", s, id)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Endpoint{}, fmt.Errorf("parse peer %q: address: %w", s, err)
	}
	if host == "" || strings.ContainsAny(host, " /@?#%") {
		return Endpoint{}, fmt.Errorf("parse peer %q: address %q: invalid host", s, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return Endpoint{}, fmt.Errorf("parse peer %q: address %q: port must be 1-65535", s, addr)
	}
	return Endpoint{Service: svc, ID: id, Addr: net.JoinHostPort(host, port)}, nil
}

// ValidServiceName checks that name is a DNS label: 1-63 lower-case
// letters, digits or '-', not starting or ending with '-'.
func ValidServiceName(name string) error {
	if name == "" || len(name) > 63 {
		return errors.New("service name must be 1-63 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("service name %q: only a-z, 0-9 and '-' allowed", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("service name %q must not start or end with '-'", name)
	}
	return nil
}

// StaticPeers is an immutable Peers table built from --peer flags (and
// optionally route prefixes). It is safe for concurrent use.
type StaticPeers struct {
	bySvc  map[string][]Endpoint
	routes []staticRoute // longest prefix first
}

type staticRoute struct{ prefix, service string }

// NewStaticPeers builds a table from endpoints and a map of route prefix to
// service. Prefixes must start with '/'.
func NewStaticPeers(eps []Endpoint, routes map[string]string) (*StaticPeers, error) {
	p := &StaticPeers{bySvc: make(map[string][]Endpoint)}
	for _, ep := range eps {
		if err := ValidServiceName(ep.Service); err != nil {
			return nil, fmt.Errorf("static peers: %w", err)
		}
		p.bySvc[ep.Service] = append(p.bySvc[ep.Service], ep)
	}
	for prefix, svc := range routes {
		if !strings.HasPrefix(prefix, "/") {
			return nil, fmt.Errorf("static peers: route %q must start with '/'", prefix)
		}
		p.routes = append(p.routes, staticRoute{prefix: prefix, service: svc})
	}
	// Longest first; ties broken by name so the order is deterministic.
	for i := 1; i < len(p.routes); i++ {
		for j := i; j > 0; j-- {
			a, b := p.routes[j-1], p.routes[j]
			if len(a.prefix) > len(b.prefix) || len(a.prefix) == len(b.prefix) && a.prefix < b.prefix {
				break
			}
			p.routes[j-1], p.routes[j] = b, a
		}
	}
	return p, nil
}

// Endpoints implements Peers.
func (p *StaticPeers) Endpoints(service string) []Endpoint { return p.bySvc[service] }

// Route implements Peers: the longest prefix that matches path on a segment
// boundary ("/users" matches "/users" and "/users/42", not "/usersx").
func (p *StaticPeers) Route(path string) (string, bool) {
	for _, r := range p.routes {
		if PrefixMatch(r.prefix, path) {
			return r.service, true
		}
	}
	return "", false
}

// PrefixMatch reports whether the route prefix matches path on a segment
// boundary. The registry adapter should use it too, so that both tables
// agree on what "/users" owns.
func PrefixMatch(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}
