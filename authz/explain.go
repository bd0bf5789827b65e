package authz

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Explain decides in like Decide (never from the cache, never audited) and
// also returns the rules that were true for this input, one line each,
// "file:row: rule head", in the order evaluation left them. It is the
// `policy eval --explain` view: which grant or deny rule made the decision.
func (e *Engine) Explain(ctx context.Context, in *Input) (Decision, []string) {
	buf := topdown.NewBufferTracer()
	d, _ := e.decide(ctx, in, buf)
	seen := map[string]bool{}
	var lines []string
	for _, ev := range *buf {
		if ev.Op != topdown.ExitOp {
			continue
		}
		rule, ok := ev.Node.(*ast.Rule)
		if !ok {
			continue
		}
		line := describeRule(rule)
		if !seen[line] {
			seen[line] = true
			lines = append(lines, line)
		}
	}
	return d, lines
}

// describeRule is "file:row: first line of the rule as written", e.g.
// "policies/authz.rego:57: covers(grant) if {"; compiled rule heads carry
// rewritten variable names, the source text does not.
func describeRule(r *ast.Rule) string {
	if r.Location == nil {
		return r.Head.Ref().String()
	}
	if r.Default && r.Head.Value != nil {
		return fmt.Sprintf("%s:%d: default %s := %s", r.Location.File, r.Location.Row, r.Head.Ref(), r.Head.Value)
	}
	text, _, _ := strings.Cut(string(r.Location.Text), "\n")
	text = strings.TrimSpace(text)
	if text == "" {
		text = r.Head.Ref().String()
	}
	return fmt.Sprintf("%s:%d: %s", r.Location.File, r.Location.Row, text)
}
