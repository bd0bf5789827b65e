package authz

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputKeys converts inputs for one Engine. It holds the object keys of the
// input document as terms, and interns the terms of values that repeat from
// request to request (the caller's and this agent's identities, methods,
// protocols, hosts, header names), so a request allocates little beyond its
// path, query and header values. Terms are shared between concurrent
// evaluations, as OPA itself shares data read from its store: evaluation
// never mutates them.
type inputKeys struct {
	source, destination, request, spiffeID, trustDomain, service *ast.Term
	method, path, query, headers, host, protocol                 *ast.Term

	sources      internTable[Source]
	destinations internTable[Destination]
	strings      internTable[string]
}

// Interning bounds: past them values are converted per request as before,
// so a client sending endless new methods or header names costs itself
// allocations, not the agent memory.
const (
	maxInternedSources      = 4096
	maxInternedDestinations = 16
	maxInternedStrings      = 4096
)

func newInputKeys() *inputKeys {
	s := ast.StringTerm
	k := &inputKeys{
		source: s("source"), destination: s("destination"), request: s("request"),
		spiffeID: s("spiffe_id"), trustDomain: s("trust_domain"), service: s("service"),
		method: s("method"), path: s("path"), query: s("query"), headers: s("headers"),
		host: s("host"), protocol: s("protocol"),
	}
	k.sources.limit, k.destinations.limit, k.strings.limit = maxInternedSources, maxInternedDestinations, maxInternedStrings
	return k
}

// astValue converts in to the OPA value the policy sees as `input`, field by
// field, without a JSON round trip (which would cost an encode and a decode
// per request). Nil maps become empty objects so that a policy can always
// index input.request.headers and input.request.query.
func (k *inputKeys) astValue(in *Input) ast.Value {
	return k.astValueOf(in, everything)
}

// astValueOf is astValue with only the parts of the request in use: those
// a policy cannot observe (see queryInputUse) are left out.
func (k *inputKeys) astValueOf(in *Input, use inputUse) ast.Value {
	fields := use.fields
	var buf [6][2]*ast.Term
	req := buf[:0]
	if fields&fieldMethod != 0 {
		req = append(req, [2]*ast.Term{k.method, k.str(in.Request.Method)})
	}
	if fields&fieldPath != 0 {
		req = append(req, [2]*ast.Term{k.path, ast.StringTerm(in.Request.Path)})
	}
	if fields&fieldQuery != 0 {
		req = append(req, [2]*ast.Term{k.query, queryTerm(in.Request.Query)})
	}
	if fields&fieldHeaders != 0 {
		req = append(req, [2]*ast.Term{k.headers, k.headerTerm(in.Request.Headers, use.headers)})
	}
	if fields&fieldHost != 0 {
		req = append(req, [2]*ast.Term{k.host, k.str(in.Request.Host)})
	}
	if fields&fieldProtocol != 0 {
		req = append(req, [2]*ast.Term{k.protocol, k.str(in.Request.Protocol)})
	}
	return ast.NewObject(
		[2]*ast.Term{k.source, k.sourceTerm(in.Source)},
		[2]*ast.Term{k.destination, k.destinationTerm(in.Destination)},
		[2]*ast.Term{k.request, ast.NewTerm(ast.NewObject(req...))},
	)
}

// inputDoc is an input document kept by one evaluation state and refilled
// for the next decision: the request's values are replaced in place
// (ast.Object.Insert on an existing key allocates nothing), which saves the
// two objects (five allocations each) and their terms that astValueOf
// builds per request. Refilling is safe because nothing keeps the document
// once the evaluation that read it has returned: the interpreter's state
// dies with the query, the rule memo is reset, the decision is copied out
// as Go values, and a state whose evaluation may still run (its deadline
// fired) is never pooled again.
type inputDoc struct {
	use                  inputUse
	doc, request         ast.Object
	docTerm, requestTerm *ast.Term
}

// fill returns the input document for in, restricted to use.
func (k *inputKeys) fill(d *inputDoc, in *Input, use inputUse) *ast.Term {
	if d.docTerm == nil || d.use.fields != use.fields || !slices.Equal(d.use.headers, use.headers) {
		// First use, or another revision's use: build afresh.
		d.use = use
		d.doc = k.astValueOf(in, use).(ast.Object)
		d.docTerm = ast.NewTerm(d.doc)
		d.requestTerm = d.doc.Get(k.request)
		d.request = d.requestTerm.Value.(ast.Object)
		return d.docTerm
	}
	f := use.fields
	if f&fieldMethod != 0 {
		d.request.Insert(k.method, k.str(in.Request.Method))
	}
	if f&fieldPath != 0 {
		d.request.Insert(k.path, ast.StringTerm(in.Request.Path))
	}
	if f&fieldQuery != 0 {
		d.request.Insert(k.query, queryTerm(in.Request.Query))
	}
	if f&fieldHeaders != 0 {
		d.request.Insert(k.headers, k.headerTerm(in.Request.Headers, use.headers))
	}
	if f&fieldHost != 0 {
		d.request.Insert(k.host, k.str(in.Request.Host))
	}
	if f&fieldProtocol != 0 {
		d.request.Insert(k.protocol, k.str(in.Request.Protocol))
	}
	d.doc.Insert(k.source, k.sourceTerm(in.Source))
	d.doc.Insert(k.destination, k.destinationTerm(in.Destination))
	d.doc.Insert(k.request, d.requestTerm) // the request's hash changed
	return d.docTerm
}

func (k *inputKeys) sourceTerm(s Source) *ast.Term {
	if t, ok := k.sources.get(s); ok {
		return t
	}
	return k.sources.put(s, ast.NewTerm(ast.NewObject(
		[2]*ast.Term{k.spiffeID, ast.StringTerm(s.SPIFFEID)},
		[2]*ast.Term{k.trustDomain, ast.StringTerm(s.TrustDomain)},
		[2]*ast.Term{k.service, ast.StringTerm(s.Service)},
	)))
}

func (k *inputKeys) destinationTerm(d Destination) *ast.Term {
	if t, ok := k.destinations.get(d); ok {
		return t
	}
	return k.destinations.put(d, ast.NewTerm(ast.NewObject(
		[2]*ast.Term{k.spiffeID, ast.StringTerm(d.SPIFFEID)},
		[2]*ast.Term{k.service, ast.StringTerm(d.Service)},
	)))
}

func (k *inputKeys) str(s string) *ast.Term {
	if t, ok := k.strings.get(s); ok {
		return t
	}
	return k.strings.put(s, ast.StringTerm(s))
}

// headerTerm converts the headers named in only, or all of them when only
// is nil. headerTerm and queryTerm share OPA's interned empty object for
// the common empty case.
func (k *inputKeys) headerTerm(h map[string]string, only []string) *ast.Term {
	if len(h) == 0 {
		return ast.InternedEmptyObject
	}
	if only != nil {
		var obj ast.Object
		for _, name := range only {
			if v, ok := h[name]; ok {
				if obj == nil {
					obj = ast.NewObjectWithCapacity(len(only))
				}
				obj.Insert(k.str(name), ast.StringTerm(v))
			}
		}
		if obj == nil {
			return ast.InternedEmptyObject
		}
		return ast.NewTerm(obj)
	}
	obj := ast.NewObjectWithCapacity(len(h))
	for name, v := range h {
		obj.Insert(k.str(name), ast.StringTerm(v))
	}
	return ast.NewTerm(obj)
}

// internTable is a bounded, copy-on-write map: lookups are one atomic load
// and a map read, with no lock; the rare insertion copies the map.
type internTable[K comparable] struct {
	m     atomic.Pointer[map[K]*ast.Term]
	mu    sync.Mutex
	limit int
}

func (t *internTable[K]) get(k K) (*ast.Term, bool) {
	if m := t.m.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	return nil, false
}

// put stores v under k unless the table is full, and returns the stored
// term (another goroutine's, if it won the race) or v.
func (t *internTable[K]) put(k K, v *ast.Term) *ast.Term {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old != nil {
		if existing, ok := (*old)[k]; ok {
			return existing
		}
		if len(*old) >= t.limit {
			return v
		}
	}
	next := make(map[K]*ast.Term, 1+len(ptrMap(old)))
	for key, val := range ptrMap(old) {
		next[key] = val
	}
	next[k] = v
	t.m.Store(&next)
	return v
}

func ptrMap[K comparable](m *map[K]*ast.Term) map[K]*ast.Term {
	if m == nil {
		return nil
	}
	return *m
}

func queryTerm(q map[string][]string) *ast.Term {
	if len(q) == 0 {
		return ast.InternedEmptyObject
	}
	obj := ast.NewObjectWithCapacity(len(q))
	for k, vs := range q {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(terms...))
	}
	return ast.NewTerm(obj)
}

// cacheKey is a canonical, unambiguous encoding of the whole input: every
// string is length-prefixed, fields come in a fixed order and map keys are
// sorted, so two inputs share a key exactly when a policy could not tell them
// apart. (Query values keep their order: a policy can see it.) The encoding
// is built in stack buffers; the returned string is its only allocation.
func (in *Input) cacheKey() string {
	var buf [512]byte
	b := buf[:0]
	for _, s := range [...]string{
		in.Source.SPIFFEID, in.Source.TrustDomain, in.Source.Service,
		in.Destination.SPIFFEID, in.Destination.Service,
		in.Request.Method, in.Request.Path, in.Request.Host, in.Request.Protocol,
	} {
		b = appendString(b, s)
	}
	// Pairs are gathered in stack arrays and sorted by name: no map
	// lookups after the sort, no allocation for the usual handful.
	var hBuf [16]headerPair
	headers := hBuf[:0]
	for k, v := range in.Request.Headers {
		headers = append(headers, headerPair{k, v})
	}
	slices.SortFunc(headers, func(a, b headerPair) int { return strings.Compare(a.name, b.name) })
	b = binary.AppendUvarint(b, uint64(len(headers)))
	for _, h := range headers {
		b = appendString(b, h.name)
		b = appendString(b, h.value)
	}
	var qBuf [8]queryParam
	query := qBuf[:0]
	for k, vs := range in.Request.Query {
		query = append(query, queryParam{k, vs})
	}
	slices.SortFunc(query, func(a, b queryParam) int { return strings.Compare(a.name, b.name) })
	b = binary.AppendUvarint(b, uint64(len(query)))
	for _, q := range query {
		b = appendString(b, q.name)
		b = binary.AppendUvarint(b, uint64(len(q.vs)))
		for _, v := range q.vs {
			b = appendString(b, v)
		}
	}
	return string(b)
}

type headerPair struct{ name, value string }

type queryParam struct {
	name string
	vs   []string
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
