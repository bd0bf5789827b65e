package registry

import (
	"slices"
	"sort"
	"strings"
)

// compactAt is how many changed services a Table carries in its overlay
// before the next change folds them into a new base. Applying a change
// costs O(compactAt) instead of O(entries), so a thousand watchers of a
// 10,000-entry registry can each take a change quickly.
const compactAt = 128

// Table is an immutable view of the registry for the data plane: endpoints
// by service and route prefix ownership. Readers never lock; the watcher
// swaps in a new *Table per change. Slices it returns are shared: do not
// modify them.
type Table struct {
	rev   int64
	store string // ID of the store rev belongs to
	count int
	base  *tableBase
	// overlay: services changed since base (nil slice: service gone) and
	// route owners changed since base ("" : route gone).
	services map[string][]Entry
	routes   map[string]string
}

type tableBase struct {
	services map[string][]Entry
	routes   map[string]string
}

// NewTable builds a table from a snapshot.
func NewTable(rev int64, entries []Entry) *Table {
	by := map[string][]Entry{}
	for _, e := range entries {
		by[e.Service] = append(by[e.Service], e)
	}
	for _, eps := range by {
		sortEndpoints(eps)
	}
	return &Table{rev: rev, count: len(entries), base: buildBase(by)}
}

func buildBase(by map[string][]Entry) *tableBase {
	b := &tableBase{services: by, routes: map[string]string{}}
	for svc, eps := range by {
		for _, r := range routesOf(eps) {
			if cur, ok := b.routes[r]; !ok || svc < cur {
				b.routes[r] = svc
			}
		}
	}
	return b
}

func sortEndpoints(eps []Entry) {
	sort.Slice(eps, func(i, j int) bool { return eps[i].Address < eps[j].Address })
}

// routesOf is the union of the endpoints' routes.
func routesOf(eps []Entry) []string {
	var out []string
	for _, e := range eps {
		for _, r := range e.Routes {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// Revision is the registry revision the table reflects (0: empty, never synced).
func (t *Table) Revision() int64 {
	if t == nil {
		return 0
	}
	return t.rev
}

// Store is the ID of the registry store the revision belongs to ("" if unknown).
func (t *Table) Store() string {
	if t == nil {
		return ""
	}
	return t.store
}

// Len is the number of entries.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return t.count
}

// Endpoints returns the service's entries sorted by address (nil if none).
func (t *Table) Endpoints(service string) []Entry {
	if t == nil {
		return nil
	}
	if eps, ok := t.services[service]; ok {
		return eps
	}
	return t.base.services[service]
}

func (t *Table) routeOwner(route string) (string, bool) {
	if svc, ok := t.routes[route]; ok {
		return svc, svc != ""
	}
	svc, ok := t.base.routes[route]
	return svc, ok
}

// Route returns the service owning the longest registered route prefix of
// the normalized path p, on segment boundaries: "/api" owns "/api" and
// "/api/x" but not "/apix".
func (t *Table) Route(p string) (service string, ok bool) {
	if t == nil || !strings.HasPrefix(p, "/") {
		return "", false
	}
	for cand := p; ; {
		if svc, ok := t.routeOwner(cand); ok {
			return svc, true
		}
		if cand == "/" {
			return "", false
		}
		i := strings.LastIndexByte(cand, '/')
		if i == 0 {
			cand = "/"
		} else {
			cand = cand[:i]
		}
	}
}

// Services returns the service names, sorted.
func (t *Table) Services() []string {
	if t == nil {
		return nil
	}
	var out []string
	for svc := range t.base.services {
		if _, changed := t.services[svc]; !changed {
			out = append(out, svc)
		}
	}
	for svc, eps := range t.services {
		if len(eps) > 0 {
			out = append(out, svc)
		}
	}
	sort.Strings(out)
	return out
}

// Entries returns every entry, sorted by service then address.
func (t *Table) Entries() []Entry {
	var out []Entry
	for _, svc := range t.Services() {
		out = append(out, t.Endpoints(svc)...)
	}
	return out
}

// apply returns a new table with one put or delete applied (t is unchanged).
func (t *Table) apply(ev Event) *Table {
	e := ev.Entry
	old := t.Endpoints(e.Service)
	eps := make([]Entry, 0, len(old)+1)
	count := t.count
	replaced := false
	for _, x := range old {
		if x.Address == e.Address {
			replaced = true
			continue
		}
		eps = append(eps, x)
	}
	if replaced {
		count--
	}
	if ev.Type == EventPut {
		eps = append(eps, e.Clone())
		sortEndpoints(eps)
		count++
	}
	if len(eps) == 0 {
		eps = nil
	}
	nt := &Table{rev: ev.Revision, store: t.store, count: count, base: t.base,
		services: make(map[string][]Entry, len(t.services)+1),
		routes:   make(map[string]string, len(t.routes)+len(e.Routes))}
	for k, v := range t.services {
		nt.services[k] = v
	}
	for k, v := range t.routes {
		nt.routes[k] = v
	}
	nt.services[e.Service] = eps
	before, after := routesOf(old), routesOf(eps)
	for _, r := range before {
		if !slices.Contains(after, r) {
			if owner, ok := nt.routeOwner(r); ok && owner == e.Service {
				nt.routes[r] = ""
			}
		}
	}
	for _, r := range after {
		nt.routes[r] = e.Service
	}
	if len(nt.services) > compactAt {
		nt.compact()
	}
	return nt
}

// compact folds the overlay into a new base.
func (t *Table) compact() {
	by := make(map[string][]Entry, len(t.base.services)+len(t.services))
	for k, v := range t.base.services {
		by[k] = v
	}
	for k, v := range t.services {
		if len(v) == 0 {
			delete(by, k)
		} else {
			by[k] = v
		}
	}
	t.base = buildBase(by)
	t.services, t.routes = nil, nil
}
