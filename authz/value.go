package authz

import (
	"encoding/binary"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// astValue converts in to the OPA value the policy sees as `input`, field by
// field, without a JSON round trip (which would cost an encode and a decode
// per request). Nil maps become empty objects so that a policy can always
// index input.request.headers and input.request.query.
func (in *Input) astValue() ast.Value {
	return ast.NewObject(
		ast.Item(ast.StringTerm("source"), ast.NewTerm(ast.NewObject(
			ast.Item(ast.StringTerm("spiffe_id"), ast.StringTerm(in.Source.SPIFFEID)),
			ast.Item(ast.StringTerm("trust_domain"), ast.StringTerm(in.Source.TrustDomain)),
			ast.Item(ast.StringTerm("service"), ast.StringTerm(in.Source.Service)),
		))),
		ast.Item(ast.StringTerm("destination"), ast.NewTerm(ast.NewObject(
			ast.Item(ast.StringTerm("spiffe_id"), ast.StringTerm(in.Destination.SPIFFEID)),
			ast.Item(ast.StringTerm("service"), ast.StringTerm(in.Destination.Service)),
		))),
		ast.Item(ast.StringTerm("request"), ast.NewTerm(ast.NewObject(
			ast.Item(ast.StringTerm("method"), ast.StringTerm(in.Request.Method)),
			ast.Item(ast.StringTerm("path"), ast.StringTerm(in.Request.Path)),
			ast.Item(ast.StringTerm("query"), ast.NewTerm(queryObject(in.Request.Query))),
			ast.Item(ast.StringTerm("headers"), ast.NewTerm(headerObject(in.Request.Headers))),
			ast.Item(ast.StringTerm("host"), ast.StringTerm(in.Request.Host)),
			ast.Item(ast.StringTerm("protocol"), ast.StringTerm(in.Request.Protocol)),
		))),
	)
}

func queryObject(q map[string][]string) ast.Object {
	obj := ast.NewObjectWithCapacity(len(q))
	for k, vs := range q {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = ast.StringTerm(v)
		}
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(terms...))
	}
	return obj
}

func headerObject(h map[string]string) ast.Object {
	obj := ast.NewObjectWithCapacity(len(h))
	for k, v := range h {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return obj
}

// cacheKey is a canonical, unambiguous encoding of the whole input: every
// string is length-prefixed, fields come in a fixed order and map keys are
// sorted, so two inputs share a key exactly when a policy could not tell them
// apart. (Query values keep their order: a policy can see it.)
func (in *Input) cacheKey() string {
	b := make([]byte, 0, 256)
	for _, s := range [...]string{
		in.Source.SPIFFEID, in.Source.TrustDomain, in.Source.Service,
		in.Destination.SPIFFEID, in.Destination.Service,
		in.Request.Method, in.Request.Path, in.Request.Host, in.Request.Protocol,
	} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(in.Request.Headers)))
	for _, k := range sortedKeys(in.Request.Headers) {
		b = appendString(b, k)
		b = appendString(b, in.Request.Headers[k])
	}
	b = binary.AppendUvarint(b, uint64(len(in.Request.Query)))
	for _, k := range sortedKeys(in.Request.Query) {
		b = appendString(b, k)
		vs := in.Request.Query[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return string(b)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
