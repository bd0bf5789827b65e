package authz

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestUnwrapResult: a partial result rule that only forwards to one rule is
// replaced by that rule; anything else is kept.
func TestUnwrapResult(t *testing.T) {
	c := ast.MustCompileModules(map[string]string{"p.rego": `package ns

__result__ = x if { data.ns.inner.allow = x }

two = x if { data.ns.inner.allow = x }
two = x if { data.ns.inner.other = x }

more = x if {
	data.ns.inner.allow = x
	x == true
}

inner.allow := true
inner.other := true
`})
	for _, tc := range []struct{ rule, want string }{
		{"data.ns.__result__", "data.ns.inner.allow"},
		{"data.ns.two", "data.ns.two"},
		{"data.ns.more", "data.ns.more"},
		{"data.ns.missing", "data.ns.missing"},
	} {
		if got := unwrapResult(c, ast.MustParseRef(tc.rule)); !got.Equal(ast.MustParseRef(tc.want)) {
			t.Errorf("unwrapResult(%s) = %s, want %s", tc.rule, got, tc.want)
		}
	}
}
