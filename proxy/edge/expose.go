package edge

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Exposure is the edge's allow-list: the route prefixes the outside may
// reach, each with an optional rewrite and rate limit. Everything else is
// answered 404 without touching the mesh.
type Exposure struct {
	routes []*Route // longest prefix first
}

// Route is one exposed prefix.
type Route struct {
	Prefix    string   // public prefix, e.g. /users
	RewriteTo string   // mesh prefix it becomes, e.g. /user-service/users ("" = unchanged)
	Limiter   *Limiter // nil = the edge's default limiter
}

// NewExposure builds the allow-list from --expose prefixes and --rewrite
// FROM=TO pairs. Every rewrite's FROM must be exposed; prefixes must be
// clean absolute paths.
func NewExposure(expose []string, rewrites []string) (*Exposure, error) {
	if len(expose) == 0 {
		return nil, fmt.Errorf("expose: no prefix given: the edge would expose nothing (use --expose /prefix)")
	}
	byPrefix := map[string]*Route{}
	e := &Exposure{}
	for _, p := range expose {
		if err := checkPrefix(p); err != nil {
			return nil, fmt.Errorf("expose %q: %w", p, err)
		}
		if _, dup := byPrefix[p]; dup {
			return nil, fmt.Errorf("expose %q: given twice", p)
		}
		r := &Route{Prefix: p}
		byPrefix[p] = r
		e.routes = append(e.routes, r)
	}
	for _, rw := range rewrites {
		from, to, ok := strings.Cut(rw, "=")
		if !ok {
			return nil, fmt.Errorf("rewrite %q: want FROM=TO, e.g. /users=/user-service/users", rw)
		}
		if err := checkPrefix(to); err != nil {
			return nil, fmt.Errorf("rewrite %q: target: %w", rw, err)
		}
		r, exposed := byPrefix[from]
		if !exposed {
			return nil, fmt.Errorf("rewrite %q: %s is not exposed (add --expose %s)", rw, from, from)
		}
		if r.RewriteTo != "" {
			return nil, fmt.Errorf("rewrite %q: %s already rewritten to %s", rw, from, r.RewriteTo)
		}
		r.RewriteTo = to
	}
	sort.SliceStable(e.routes, func(i, j int) bool { return len(e.routes[i].Prefix) > len(e.routes[j].Prefix) })
	return e, nil
}

// Route returns the exposed route for a normalized path, or nil when the
// path is not exposed.
func (e *Exposure) Route(normalizedPath string) *Route {
	for _, r := range e.routes {
		if hasPrefix(normalizedPath, r.Prefix) {
			return r
		}
	}
	return nil
}

// Routes lists the exposed routes, longest prefix first.
func (e *Exposure) Routes() []*Route { return e.routes }

// Rewrite maps a public path under r.Prefix to the mesh path.
func (r *Route) Rewrite(p string) string {
	if r.RewriteTo == "" {
		return p
	}
	rest := strings.TrimPrefix(p, strings.TrimSuffix(r.Prefix, "/"))
	if rest == "" {
		return r.RewriteTo
	}
	return strings.TrimSuffix(r.RewriteTo, "/") + rest
}

// hasPrefix is a path-segment prefix match: /users matches /users and
// /users/42, never /usersecret.
func hasPrefix(p, prefix string) bool {
	if prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

func checkPrefix(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("must start with /")
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && p != "/" {
		clean += "/"
	}
	if clean != p {
		return fmt.Errorf("not a clean path (want %s)", clean)
	}
	if strings.ContainsAny(p, "%\\?#\x00") {
		return fmt.Errorf("may not contain %%, \\, ?, # or NUL")
	}
	return nil
}
