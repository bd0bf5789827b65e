package authz

import (
	"slices"

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

// inputUse is what of input.request a decision query can observe. A part
// no rule can reach need not be converted: the path, the query and the
// headers are built afresh for every request, and a policy that never
// looks at the query, or only at one header by name (the shipped one reads
// x-tenant, once partially evaluated), should not pay for the rest.
type inputUse struct {
	fields requestFields
	// headers, when fields has fieldHeaders, are the only header names
	// read; nil means every header (read by a variable name, or whole).
	headers []string
}

// everything is the use of a policy that may read all of the input.
var everything = inputUse{fields: allRequestFields}

func (u inputUse) union(o inputUse) inputUse {
	out := inputUse{fields: u.fields | o.fields}
	switch {
	case u.fields&fieldHeaders != 0 && u.headers == nil, o.fields&fieldHeaders != 0 && o.headers == nil:
		out.headers = nil
	default:
		out.headers = append(slices.Clone(u.headers), o.headers...)
		slices.Sort(out.headers)
		out.headers = slices.Compact(out.headers)
	}
	return out
}

// queryInputUse returns what evaluating root (a rule reference, such as
// data.meshguard.authz.allow) can observe of the input: it walks the rules
// root refers to and, transitively, every rule those refer to. The analysis
// is conservative: `input` or `input.request` used whole, or indexed by
// anything but a constant string (input.request[k]), counts as using every
// field. ok is false when no rule defines root.
func queryInputUse(c *ast.Compiler, root ast.Ref) (use inputUse, ok bool) {
	opts := ast.RulesOptions{IncludeHiddenModules: true}
	rules := c.GetRulesDynamicWithOpts(root, opts)
	if len(rules) == 0 {
		return inputUse{}, false
	}
	a := &inputAnalysis{seen: map[*ast.Rule]bool{}, headers: map[string]bool{}}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if a.all {
			return true
		}
		switch x := x.(type) {
		case ast.Ref:
			switch {
			case x.HasPrefix(ast.InputRootRef):
				a.input(x)
			case x.HasPrefix(ast.DefaultRootRef):
				// Rules the reference may reach: all of those under
				// its ground prefix (data.a[x].b: all under data.a).
				a.queue = append(a.queue, c.GetRulesDynamicWithOpts(x.GroundPrefix(), opts)...)
			default:
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
				a.all = true
			}
		}
		return false
	})
	a.queue = append(a.queue, rules...)
	for len(a.queue) > 0 && !a.all {
		r := a.queue[len(a.queue)-1]
		a.queue = a.queue[:len(a.queue)-1]
		if a.seen[r] {
			continue
		}
		a.seen[r] = true
		vis.Walk(r)
	}
	if a.all {
		return everything, true
	}
	use = inputUse{fields: a.fields}
	if a.fields&fieldHeaders != 0 && !a.allHeaders {
		use.headers = make([]string, 0, len(a.headers))
		for h := range a.headers {
			use.headers = append(use.headers, h)
		}
		slices.Sort(use.headers)
	}
	return use, true
}

// decisionInputUse is queryInputUse for a decision query: root is the
// reference as written, result the rule rego evaluates instead when the
// query was partially evaluated (nil if it was not). Should result have no
// rules (rego placing its partial result elsewhere, or partial evaluation
// leaving nothing), the rules as written are analyzed: partial evaluation
// only specializes them, it observes no more of the input than they do. A
// root with no rules is undefined or base data, and observes nothing.
func decisionInputUse(c *ast.Compiler, root, result ast.Ref) inputUse {
	if result != nil {
		if use, ok := queryInputUse(c, result); ok {
			return use
		}
	}
	use, _ := queryInputUse(c, root)
	return use
}

type inputAnalysis struct {
	seen       map[*ast.Rule]bool
	queue      []*ast.Rule
	all        bool // input used whole
	fields     requestFields
	allHeaders bool
	headers    map[string]bool
}

// input records one reference rooted at input.
func (a *inputAnalysis) input(ref ast.Ref) {
	if len(ref) < 2 {
		a.all = true
		return
	}
	top, ok := ref[1].Value.(ast.String)
	if !ok {
		a.all = true
		return
	}
	if top != "request" {
		return // input.source..., input.destination..., or nothing
	}
	if len(ref) < 3 {
		a.all = true
		return
	}
	name, ok := ref[2].Value.(ast.String)
	if !ok {
		a.all = true
		return
	}
	field := requestFieldNames[string(name)] // 0 for a field the input does not have
	a.fields |= field
	if field != fieldHeaders {
		return
	}
	if len(ref) < 4 {
		a.allHeaders = true
		return
	}
	header, ok := ref[3].Value.(ast.String)
	if !ok {
		a.allHeaders = true
		return
	}
	a.headers[string(header)] = true
}
