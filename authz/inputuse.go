package authz

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// requestFields is a set of input.request fields, one bit each.
type requestFields uint8

const (
	fieldMethod requestFields = 1 << iota
	fieldPath
	fieldQuery
	fieldHeaders
	fieldHost
	fieldProtocol

	allRequestFields = fieldMethod | fieldPath | fieldQuery | fieldHeaders | fieldHost | fieldProtocol
)

var requestFieldNames = map[string]requestFields{
	"method": fieldMethod, "path": fieldPath, "query": fieldQuery,
	"headers": fieldHeaders, "host": fieldHost, "protocol": fieldProtocol,
}

// usedRequestFields returns the input.request fields the compiled modules
// can observe. A field no rule can reach need not be converted: the query
// and the headers are the only parts of the input built afresh for every
// request, and a policy that never looks at them (the shipped one never
// reads the query) should not pay for them. The analysis is conservative:
// `input` or `input.request` used whole, or indexed by anything but a
// constant string (input.request[k]), counts as using every field.
func usedRequestFields(modules map[string]*ast.Module) requestFields {
	var used requestFields
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if used == allRequestFields {
			return true
		}
		switch x := x.(type) {
		case ast.Ref:
			if x.HasPrefix(ast.InputRootRef) {
				used |= refRequestFields(x)
			} else if len(x) > 0 {
				vis.Walk(x[0])
			}
			// The operands of a reference may hold references too.
			for _, t := range x[1:] {
				vis.Walk(t)
			}
			return true
		case ast.Var:
			// input outside a reference head: used whole.
			if x == ast.InputRootDocument.Value {
				used = allRequestFields
			}
		}
		return false
	})
	for _, m := range modules {
		vis.Walk(m)
	}
	return used
}

// refRequestFields is what one reference rooted at input can observe.
func refRequestFields(ref ast.Ref) requestFields {
	if len(ref) < 2 {
		return allRequestFields
	}
	top, ok := ref[1].Value.(ast.String)
	if !ok {
		return allRequestFields
	}
	if top != "request" {
		return 0 // input.source..., input.destination..., or nothing
	}
	if len(ref) < 3 {
		return allRequestFields
	}
	field, ok := ref[2].Value.(ast.String)
	if !ok {
		return allRequestFields
	}
	return requestFieldNames[string(field)] // 0 for a field the input does not have
}
