package authz

import (
	"context"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// decisionQuery evaluates one rule of a revision (the allow or the reasons
// rule, or the rule rego put their partial evaluation under) with OPA's
// interpreter directly. rego.PreparedEvalQuery.Eval, which it replaces on
// the request path, costs per decision an EvalContext (~500 bytes), a
// ResultSet with its Result, bindings map and ExpressionValue, and the
// conversion of the answer to Go values; the engine needs none of them. The
// interpreter is set up exactly as rego sets it up (strict built-in errors,
// rule indexing, early exit, the revision's compiler and store), and the
// explain query, which needs rego's tracing, still goes through rego.
type decisionQuery struct {
	body     ast.Body
	qc       ast.QueryCompiler
	out      ast.Var // bound to the rule's value
	compiler *ast.Compiler
	store    storage.Store
	txn      storage.Transaction
}

// noMetrics is the interpreter's metrics sink: nothing reads them.
var noMetrics = metrics.NoOp()

func newDecisionQuery(c *ast.Compiler, store storage.Store, txn storage.Transaction, rule ast.Ref) (*decisionQuery, error) {
	out := ast.Var("meshguard_decision")
	qc := c.QueryCompiler()
	body, err := qc.Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(out), ast.NewTerm(rule))))
	if err != nil {
		return nil, fmt.Errorf("compiling query %s: %w", rule, err)
	}
	for rewritten, orig := range qc.RewrittenVars() {
		if orig == out {
			out = rewritten
		}
	}
	return &decisionQuery{body: body, qc: qc, out: out, compiler: c, store: store, txn: txn}, nil
}

// eval returns the rule's value, or defined false when it is undefined.
func (q *decisionQuery) eval(ctx context.Context, st *evalState, input *ast.Term, now time.Time) (value ast.Value, defined bool, err error) {
	n := 0
	err = topdown.NewQuery(q.body).
		WithQueryCompiler(q.qc).
		WithCompiler(q.compiler).
		WithStore(q.store).
		WithTransaction(q.txn).
		WithInput(input).
		WithTime(now).
		WithMetrics(noMetrics).
		WithStrictBuiltinErrors(true).
		WithIndexing(true).
		WithEarlyExit(true).
		WithCancel(&st.deadline).
		WithVirtualCache(&st.rules).
		Iter(ctx, func(qr topdown.QueryResult) error {
			n++
			if t := qr[q.out]; t != nil {
				value = t.Value
			}
			return nil
		})
	if err != nil {
		return nil, false, err
	}
	// One result, as rego requires of a decision; a complete rule cannot
	// give more (conflicting values are an error).
	if n != 1 || value == nil {
		return nil, false, nil
	}
	return value, true, nil
}
