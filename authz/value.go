package authz

import (
	"encoding/binary"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputKeys holds the object keys of the input document as terms, made
// once per Engine: a request then allocates only its own values.
type inputKeys struct {
	source, destination, request, spiffeID, trustDomain, service *ast.Term
	method, path, query, headers, host, protocol                 *ast.Term
}

func newInputKeys() *inputKeys {
	s := ast.StringTerm
	return &inputKeys{
		source: s("source"), destination: s("destination"), request: s("request"),
		spiffeID: s("spiffe_id"), trustDomain: s("trust_domain"), service: s("service"),
		method: s("method"), path: s("path"), query: s("query"), headers: s("headers"),
		host: s("host"), protocol: s("protocol"),
	}
}

// astValue converts in to the OPA value the policy sees as `input`, field by
// field, without a JSON round trip (which would cost an encode and a decode
// per request). Nil maps become empty objects so that a policy can always
// index input.request.headers and input.request.query.
func (k *inputKeys) astValue(in *Input) ast.Value {
	return ast.NewObject(
		[2]*ast.Term{k.source, ast.NewTerm(ast.NewObject(
			[2]*ast.Term{k.spiffeID, ast.StringTerm(in.Source.SPIFFEID)},
			[2]*ast.Term{k.trustDomain, ast.StringTerm(in.Source.TrustDomain)},
			[2]*ast.Term{k.service, ast.StringTerm(in.Source.Service)},
		))},
		[2]*ast.Term{k.destination, ast.NewTerm(ast.NewObject(
			[2]*ast.Term{k.spiffeID, ast.StringTerm(in.Destination.SPIFFEID)},
			[2]*ast.Term{k.service, ast.StringTerm(in.Destination.Service)},
		))},
		[2]*ast.Term{k.request, ast.NewTerm(ast.NewObject(
			[2]*ast.Term{k.method, ast.StringTerm(in.Request.Method)},
			[2]*ast.Term{k.path, ast.StringTerm(in.Request.Path)},
			[2]*ast.Term{k.query, ast.NewTerm(queryObject(in.Request.Query))},
			[2]*ast.Term{k.headers, ast.NewTerm(headerObject(in.Request.Headers))},
			[2]*ast.Term{k.host, ast.StringTerm(in.Request.Host)},
			[2]*ast.Term{k.protocol, ast.StringTerm(in.Request.Protocol)},
		))},
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
	var keyBuf [16]string
	keys := keyBuf[:0]
	for k := range in.Request.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, in.Request.Headers[k])
	}
	keys = keyBuf[:0]
	for k := range in.Request.Query {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
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
