package registry

import (
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits on an entry. They bound what one agent can make every other agent
// hold in memory.
const (
	MaxServiceLen  = 63
	MaxRoutes      = 32
	MaxRouteLen    = 256
	MaxLabels      = 16
	MaxLabelKeyLen = 63
	MaxLabelValLen = 128
	MinWeight      = 1
	MaxWeight      = 1000
	// DefaultWeight is given to an entry registered without a weight.
	DefaultWeight = 100
)

var (
	serviceRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	labelKeyRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
)

// Entry is one endpoint of a service, published by the agent that owns the
// SPIFFE ID. The pair (Service, Address) identifies it.
type Entry struct {
	// Service is the service name: a DNS label (lower-case letters, digits, '-').
	Service string `json:"service"`
	// SPIFFEID is the identity serving at Address: spiffe://TD/svc/<Service>.
	SPIFFEID string `json:"spiffe_id"`
	// Address is the agent's inbound listener as host:port.
	Address string `json:"address"`
	// Routes are the path prefixes the service owns (normalized, starting with '/').
	Routes []string `json:"routes,omitempty"`
	// Labels are free metadata, e.g. {"version": "v2"}.
	Labels map[string]string `json:"labels,omitempty"`
	// Weight is the relative share of the service's traffic (1..1000).
	Weight int `json:"weight"`
	// Expires is when the lease ends unless renewed, as last known by the store.
	Expires time.Time `json:"expires,omitzero"`
	// Revision is the store revision at which the entry was last written.
	Revision int64 `json:"revision,omitempty"`
}

// Key identifies an entry.
type Key struct {
	Service string `json:"service"`
	Address string `json:"address"`
}

// String is "service@address".
func (k Key) String() string { return k.Service + "@" + k.Address }

// Key returns the entry's key.
func (e Entry) Key() Key { return Key{Service: e.Service, Address: e.Address} }

// ID parses SPIFFEID (valid for every entry that passed Validate).
func (e Entry) ID() (spiffeid.ID, error) { return spiffeid.FromString(e.SPIFFEID) }

// Clone returns a deep copy, so that a stored entry is never shared.
func (e Entry) Clone() Entry {
	c := e
	if e.Routes != nil {
		c.Routes = append([]string(nil), e.Routes...)
	}
	if e.Labels != nil {
		c.Labels = make(map[string]string, len(e.Labels))
		for k, v := range e.Labels {
			c.Labels[k] = v
		}
	}
	return c
}

// Normalize fills the default weight and sorts the routes. Call it before
// Validate.
func (e *Entry) Normalize() {
	if e.Weight == 0 {
		e.Weight = DefaultWeight
	}
	sort.Strings(e.Routes)
}

// ServiceID is the only SPIFFE ID that may register service in td.
func ServiceID(td spiffeid.TrustDomain, service string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "svc", service)
}

// ServiceOf returns NAME for spiffe://TD/svc/NAME and false for any other ID.
func ServiceOf(id spiffeid.ID) (string, bool) {
	name, ok := strings.CutPrefix(id.Path(), "/svc/")
	if !ok || ValidateService(name) != nil {
		return "", false
	}
	return name, true
}

// Validate checks every field of a normalized entry and returns the first
// problem found. Expires and Revision are the store's and are not checked.
func (e *Entry) Validate() error {
	if err := ValidateService(e.Service); err != nil {
		return err
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return fmt.Errorf("invalid spiffe_id %q: %w", e.SPIFFEID, err)
	}
	if id.Path() != "/svc/"+e.Service {
		return fmt.Errorf("invalid spiffe_id %q: service %q must be registered by spiffe://%s/svc/%s", e.SPIFFEID, e.Service, id.TrustDomain().Name(), e.Service)
	}
	if err := ValidateAddress(e.Address); err != nil {
		return err
	}
	if len(e.Routes) > MaxRoutes {
		return fmt.Errorf("invalid routes: %d routes, at most %d", len(e.Routes), MaxRoutes)
	}
	seen := make(map[string]bool, len(e.Routes))
	for _, r := range e.Routes {
		if err := ValidateRoute(r); err != nil {
			return err
		}
		if seen[r] {
			return fmt.Errorf("invalid route %q: listed twice", r)
		}
		seen[r] = true
	}
	if len(e.Labels) > MaxLabels {
		return fmt.Errorf("invalid labels: %d labels, at most %d", len(e.Labels), MaxLabels)
	}
	for k, v := range e.Labels {
		if len(k) > MaxLabelKeyLen || !labelKeyRE.MatchString(k) {
			return fmt.Errorf("invalid label key %q: want at most %d of [a-z0-9._-], starting and ending alphanumeric", k, MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValLen {
			return fmt.Errorf("invalid label %q: value of %d bytes, at most %d", k, len(v), MaxLabelValLen)
		}
		for _, c := range v {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("invalid label %q: value has a control character", k)
			}
		}
	}
	if e.Weight < MinWeight || e.Weight > MaxWeight {
		return fmt.Errorf("invalid weight %d: want %d..%d", e.Weight, MinWeight, MaxWeight)
	}
	return nil
}

// ValidateService checks a service name: a DNS label of at most 63
// lower-case letters, digits and '-', so it is also a safe path segment.
func ValidateService(s string) error {
	if s == "" {
		return errors.New("invalid service: empty")
	}
	if len(s) > MaxServiceLen || !serviceRE.MatchString(s) {
		return fmt.Errorf("invalid service %q: want at most %d of [a-z0-9-], starting and ending alphanumeric", s, MaxServiceLen)
	}
	return nil
}

// ValidateAddress checks an inbound address: host:port with a numeric port
// in 1..65535 and a host that is an IP address or a DNS name.
func ValidateAddress(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port", a)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return fmt.Errorf("invalid address %q: port must be 1..65535", a)
	}
	if host == "" {
		return fmt.Errorf("invalid address %q: empty host", a)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("invalid address %q: host name too long", a)
	}
	for _, label := range strings.Split(host, ".") {
		if len(label) > 63 || !hostLabelRE.MatchString(label) {
			return fmt.Errorf("invalid address %q: host is neither an IP address nor a DNS name", a)
		}
	}
	return nil
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)

// ValidateRoute checks a route prefix: it starts with '/', is already
// normalized (no '.', '..', '//' segments or trailing '/'), and holds no
// escapes, backslashes, query, fragment or control characters, so it can be
// compared with the proxy's normalized request paths.
func ValidateRoute(r string) error {
	if !strings.HasPrefix(r, "/") {
		return fmt.Errorf("invalid route %q: must start with /", r)
	}
	if len(r) > MaxRouteLen {
		return fmt.Errorf("invalid route %q: longer than %d bytes", r, MaxRouteLen)
	}
	if strings.ContainsAny(r, "%\\?#*") {
		return fmt.Errorf("invalid route %q: must not contain %%, \\, ?, # or *", r)
	}
	for _, c := range r {
		if c <= 0x20 || c == 0x7f {
			return fmt.Errorf("invalid route %q: must not contain spaces or control characters", r)
		}
	}
	if path.Clean(r) != r {
		return fmt.Errorf("invalid route %q: not a normalized path (want %q)", r, path.Clean(r))
	}
	return nil
}

// RouteMatches reports whether route owns path p: p is the route itself or
// lies below it on a segment boundary ("/api" owns "/api/x", not "/apix").
func RouteMatches(route, p string) bool {
	if route == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == route || (strings.HasPrefix(p, route) && p[len(route)] == '/')
}
