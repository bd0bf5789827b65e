package authz

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"
)

// DecisionRef is the rule every policy set must define.
const DecisionRef = "data.meshguard.authz.allow"

// The queries prepared per revision. The request path runs allowQuery and,
// only when it denies, reasonsQuery; both are partially evaluated at load
// time (see compile). explainQuery answers both in one traced evaluation of
// the rules as written, for `policy eval --explain`; the comprehension makes
// a policy without reasons yield [].
const (
	allowQuery   = DecisionRef
	reasonsQuery = "data.meshguard.authz.reasons"
	explainQuery = `allow := data.meshguard.authz.allow; reasons := [r | allow == false; some r in data.meshguard.authz.reasons]`
)

// prepareTimeout bounds compiling, testing and partially evaluating one
// revision: partial evaluation runs whatever the policy computes from data
// alone, and a policy that loops there must be refused, not hang the reload.
const prepareTimeout = 30 * time.Second

// policyFile is one file of a policy directory, read into memory so that the
// revision hash and the compiled policy are made from the same bytes.
type policyFile struct {
	path string // as opened: dir joined with the relative path
	rel  string // relative to the directory, slash-separated
	data []byte
}

func (f policyFile) isTest() bool { return strings.HasSuffix(f.rel, "_test.rego") }
func (f policyFile) isRego() bool { return strings.HasSuffix(f.rel, ".rego") }

// readPolicyDir reads every .rego file and every data.json / data.yaml /
// data.yml file under dir. Names starting with "." are skipped: editors'
// swap files, and the "..data" directories of a Kubernetes ConfigMap mount
// (whose files are also reachable through top-level symlinks, which are
// followed). It returns the files sorted by relative path and the revision,
// a hash of their names and contents.
func readPolicyDir(dir string) ([]policyFile, string, error) {
	var files []policyFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if path != dir && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !strings.HasSuffix(name, ".rego") && !isDataFile(name) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files = append(files, policyFile{path: path, rel: filepath.ToSlash(rel), data: data})
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("reading policy directory: %w", err)
	}
	slices.SortFunc(files, func(a, b policyFile) int { return strings.Compare(a.rel, b.rel) })
	h := sha256.New()
	for _, f := range files {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f.rel)))
		h.Write(n[:])
		h.Write([]byte(f.rel))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.data)))
		h.Write(n[:])
		h.Write(f.data)
	}
	return files, hex.EncodeToString(h.Sum(nil))[:16], nil
}

func isDataFile(name string) bool {
	return name == "data.json" || name == "data.yaml" || name == "data.yml"
}

// Problem is one error in a policy file, located to the column.
type Problem struct {
	File    string `json:"file"`
	Row     int    `json:"row"`
	Col     int    `json:"col"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.File == "" {
		return p.Message
	}
	if p.Code != "" {
		return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Row, p.Col, p.Code, p.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Row, p.Col, p.Message)
}

// PolicyError reports a policy directory that does not parse or compile (or
// lacks the decision rule). Callers branch on it: the CLI exits 2.
type PolicyError struct {
	Problems []Problem
}

func (e *PolicyError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return "policy does not compile:\n" + strings.Join(lines, "\n")
}

// TestFailure reports a policy revision whose _test.rego tests fail.
type TestFailure struct {
	Failed []TestResult
	Total  int
}

func (e *TestFailure) Error() string {
	lines := make([]string, 0, len(e.Failed))
	for _, r := range e.Failed {
		lines = append(lines, r.String())
	}
	return fmt.Sprintf("policy tests failed (%d of %d):\n%s", len(e.Failed), e.Total, strings.Join(lines, "\n"))
}

// TestResult is the outcome of one test_ rule of a _test.rego file.
type TestResult struct {
	Name     string `json:"name"` // package.test_name
	Location string `json:"location"`
	Pass     bool   `json:"pass"`
	Skip     bool   `json:"skip,omitempty"`
	Error    string `json:"error,omitempty"`

	file string // for ordering by file, then line
	row  int
}

func (r TestResult) String() string {
	switch {
	case r.Pass:
		return fmt.Sprintf("PASS %s (%s)", r.Name, r.Location)
	case r.Skip:
		return fmt.Sprintf("SKIP %s (%s)", r.Name, r.Location)
	case r.Error != "":
		return fmt.Sprintf("ERROR %s (%s): %s", r.Name, r.Location, r.Error)
	default:
		return fmt.Sprintf("FAIL %s (%s)", r.Name, r.Location)
	}
}

func astErrorProblems(err error) *PolicyError {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		var one *ast.Error
		if !errors.As(err, &one) {
			return &PolicyError{Problems: []Problem{{Message: err.Error()}}}
		}
		errs = ast.Errors{one}
	}
	pe := &PolicyError{}
	for _, e := range errs {
		p := Problem{Code: e.Code, Message: e.Message}
		if e.Location != nil {
			p.File, p.Row, p.Col = e.Location.File, e.Location.Row, e.Location.Col
		}
		pe.Problems = append(pe.Problems, p)
	}
	return pe
}

// parsed is a policy directory turned into modules and a data document.
type parsed struct {
	modules     map[string]*ast.Module // production modules (no _test.rego)
	testModules map[string]*ast.Module // production and test modules
	data        map[string]any
}

func parseFiles(files []policyFile) (*parsed, error) {
	p := &parsed{modules: map[string]*ast.Module{}, testModules: map[string]*ast.Module{}, data: map[string]any{}}
	opts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	var problems []Problem
	for _, f := range files {
		if f.isRego() {
			m, err := ast.ParseModuleWithOpts(f.path, string(f.data), opts)
			if err != nil {
				problems = append(problems, astErrorProblems(err).Problems...)
				continue
			}
			p.testModules[f.path] = m
			if !f.isTest() {
				p.modules[f.path] = m
			}
			continue
		}
		var doc any
		if err := util.Unmarshal(f.data, &doc); err != nil {
			problems = append(problems, Problem{File: f.path, Row: 1, Col: 1, Message: "data file is not valid JSON or YAML: " + err.Error()})
			continue
		}
		if err := mergeData(p.data, dataPath(f.rel), doc); err != nil {
			problems = append(problems, Problem{File: f.path, Row: 1, Col: 1, Message: err.Error()})
		}
	}
	if len(problems) > 0 {
		return nil, &PolicyError{Problems: problems}
	}
	if len(p.modules) == 0 {
		return nil, &PolicyError{Problems: []Problem{{Message: "no .rego policy files found (besides tests)"}}}
	}
	return p, nil
}

// dataPath places a data file the way OPA does: a/b/data.json is data.a.b.
func dataPath(rel string) []string {
	dir := filepath.ToSlash(filepath.Dir(rel))
	if dir == "." {
		return nil
	}
	return strings.Split(dir, "/")
}

func mergeData(root map[string]any, path []string, doc any) error {
	node := root
	for i, k := range path {
		if i == len(path)-1 {
			break
		}
		next, ok := node[k].(map[string]any)
		if !ok {
			if _, exists := node[k]; exists {
				return fmt.Errorf("data path %s conflicts with a non-object value", strings.Join(path[:i+1], "."))
			}
			next = map[string]any{}
			node[k] = next
		}
		node = next
	}
	if len(path) > 0 {
		last := path[len(path)-1]
		if existing, ok := node[last]; ok {
			merged, ok := mergeValues(existing, doc)
			if !ok {
				return fmt.Errorf("data at %s conflicts with another data file", strings.Join(path, "."))
			}
			node[last] = merged
			return nil
		}
		node[last] = doc
		return nil
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return errors.New("a top-level data file must hold a JSON object")
	}
	for k, v := range obj {
		if existing, ok := root[k]; ok {
			merged, ok := mergeValues(existing, v)
			if !ok {
				return fmt.Errorf("data at %s conflicts with another data file", k)
			}
			root[k] = merged
			continue
		}
		root[k] = v
	}
	return nil
}

func mergeValues(a, b any) (any, bool) {
	ao, aok := a.(map[string]any)
	bo, bok := b.(map[string]any)
	if !aok || !bok {
		return nil, false
	}
	for k, v := range bo {
		if existing, ok := ao[k]; ok {
			m, ok := mergeValues(existing, v)
			if !ok {
				return nil, false
			}
			ao[k] = m
			continue
		}
		ao[k] = v
	}
	return ao, true
}

// compiledSet is one policy revision ready to decide: compiled once,
// tested, prepared once. It is immutable and swapped whole.
type compiledSet struct {
	revision string
	allow    *decisionQuery
	reasons  *decisionQuery
	explain  rego.PreparedEvalQuery
	// nondeterministic lists the non-deterministic built-ins the policy
	// calls; when it is non-empty, decisions are never cached.
	nondeterministic []string
	// input is what of input.request the decision queries can observe;
	// the rest is not converted (see queryInputUse).
	input inputUse
	// partialErr says why partial evaluation was not possible (the
	// queries concerned are then evaluated on the rules as written).
	partialErr error
	files      []string
}

// compile turns a policy directory's files into a compiledSet: strict
// compile, decision rule present, tests pass (unless skipTests), query
// prepared.
func compile(ctx context.Context, files []policyFile, revision string, skipTests bool) (*compiledSet, error) {
	ctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	p, err := parseFiles(files)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().
		WithStrict(true).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(false)
	if compiler.Compile(p.modules); compiler.Failed() {
		return nil, astErrorProblems(compiler.Errors)
	}
	if len(compiler.GetRulesExact(ast.MustParseRef(DecisionRef))) == 0 {
		return nil, &PolicyError{Problems: []Problem{{Message: "no rule defines " + DecisionRef + " (package meshguard.authz, rule allow)"}}}
	}
	if !skipTests {
		if err := runTests(ctx, p); err != nil {
			return nil, err
		}
	}
	store := inmem.NewFromObjectWithOpts(p.data, inmem.OptReturnASTValuesOnRead(true), inmem.OptRoundTripOnWrite(false))
	set := &compiledSet{revision: revision, nondeterministic: nondeterministicBuiltins(compiler)}
	// Partial evaluation specializes the rules to this revision's data:
	// allow-list lookups become comparisons of input fields with constants,
	// which OPA's rule index then answers without trying every entry. Non-
	// deterministic built-ins are left as calls (OPA does not evaluate them
	// during partial evaluation), so their results stay per request.
	//
	// The decision queries are prepared with rego, which partially
	// evaluates them and adds the result to the compiler, under the
	// namespace as __result__; decisions then evaluate that rule directly
	// (see decisionQuery). A query partial evaluation cannot handle is
	// evaluated as written.
	var rules [2]ast.Ref // the rule each decision query evaluates
	for i, q := range []struct {
		text      string
		namespace string // where partial evaluation puts its rules; "" = none
	}{
		{allowQuery, "meshguard_partial_allow"},
		{reasonsQuery, "meshguard_partial_reasons"},
		{explainQuery, ""},
	} {
		body, err := ast.ParseBodyWithOpts(q.text, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("parsing decision query: %w", err)
		}
		prepare := func(partial bool) (rego.PreparedEvalQuery, error) {
			opts := []func(*rego.Rego){
				rego.ParsedQuery(body),
				rego.Compiler(compiler),
				rego.Store(store),
				rego.StoreReadAST(true),
				rego.StrictBuiltinErrors(true),
			}
			if !partial {
				return rego.New(opts...).PrepareForEval(ctx)
			}
			opts = append(opts, rego.PartialNamespace(q.namespace))
			return rego.New(opts...).PrepareForEval(ctx, rego.WithPartialEval())
		}
		partial := q.namespace != ""
		pq, err := prepare(partial)
		if err != nil && partial && ctx.Err() == nil {
			set.partialErr = errors.Join(set.partialErr, err)
			partial = false
			pq, err = prepare(false)
		}
		if err != nil {
			return nil, fmt.Errorf("preparing query %s: %w", q.text, err)
		}
		if q.namespace == "" {
			set.explain = pq
			continue
		}
		written := body[0].Terms.(*ast.Term).Value.(ast.Ref)
		rules[i] = written
		var result ast.Ref
		if partial {
			result = ast.MustParseRef("data." + q.namespace + ".__result__")
			rules[i] = result
		}
		set.input = set.input.union(decisionInputUse(compiler, written, result))
	}
	// One read transaction serves every decision of the revision: the
	// store is never written after this point, a read transaction of the
	// in-memory store only reads its immutable data (so concurrent use is
	// safe), and opening one per evaluation cost an allocation and a
	// contended lock. It is never closed: the store goes with the set.
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening policy data transaction: %w", err)
	}
	// After every prepare: each one may have recompiled the compiler.
	for i := range rules {
		rules[i] = unwrapResult(compiler, rules[i])
	}
	if set.allow, err = newDecisionQuery(compiler, store, txn, rules[0]); err != nil {
		return nil, err
	}
	if set.reasons, err = newDecisionQuery(compiler, store, txn, rules[1]); err != nil {
		return nil, err
	}
	for _, f := range files {
		set.files = append(set.files, f.rel)
	}
	return set, nil
}

// unwrapResult returns the rule a partial result rule only forwards: rego
// puts a single partially evaluated query q under the namespace as
// `__result__ = x if { q = x }`; evaluating q's reference directly gives the
// same value and spares one rule evaluation per decision. Any other shape
// (several queries, more than a forward) is evaluated as it is.
func unwrapResult(c *ast.Compiler, rule ast.Ref) ast.Ref {
	rs := c.GetRulesExact(rule)
	if len(rs) != 1 || rs[0].Else != nil || rs[0].Default || len(rs[0].Body) != 1 || rs[0].Head.Value == nil {
		return rule
	}
	out, ok := rs[0].Head.Value.Value.(ast.Var)
	expr := rs[0].Body[0]
	if !ok || !expr.IsEquality() || expr.Negated || len(expr.With) > 0 {
		return rule
	}
	a, b := expr.Operand(0), expr.Operand(1)
	if v, ok := a.Value.(ast.Var); ok && v.Equal(out) {
		a, b = b, a
	}
	ref, ok := a.Value.(ast.Ref)
	if v, isVar := b.Value.(ast.Var); !ok || !isVar || !v.Equal(out) || !ref.IsGround() || !ref.HasPrefix(ast.DefaultRootRef) {
		return rule
	}
	return ref
}

// runTests runs every test_ rule of the directory's modules (test files
// included) with OPA's tester, exactly as `opa test DIR` would.
func runTests(ctx context.Context, p *parsed) error {
	results, err := testModules(ctx, p)
	if err != nil {
		return err
	}
	var failed []TestResult
	for _, r := range results {
		if !r.Pass && !r.Skip {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		return &TestFailure{Failed: failed, Total: len(results)}
	}
	return nil
}

func testModules(ctx context.Context, p *parsed) ([]TestResult, error) {
	store := inmem.NewFromObjectWithOpts(p.data, inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening test transaction: %w", err)
	}
	defer store.Abort(ctx, txn)
	ch, err := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)).
		SetDefaultRegoVersion(ast.RegoV1).
		SetStore(store).
		SetModules(p.testModules).
		RunTests(ctx, txn)
	if err != nil {
		return nil, astErrorProblems(err)
	}
	var results []TestResult
	for r := range ch {
		tr := TestResult{Name: r.Package + "." + r.Name, Pass: r.Pass(), Skip: r.Skip}
		if r.Location != nil {
			tr.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
			tr.file, tr.row = r.Location.File, r.Location.Row
		}
		if r.Error != nil {
			tr.Error = r.Error.Error()
		}
		results = append(results, tr)
	}
	slices.SortFunc(results, func(a, b TestResult) int {
		if c := strings.Compare(a.file, b.file); c != 0 {
			return c
		}
		if a.row != b.row {
			return a.row - b.row
		}
		return strings.Compare(a.Name, b.Name)
	})
	return results, nil
}

// TestDir runs the _test.rego tests of a policy directory, as
// `meshguard policy test DIR` does. A directory that does not parse or
// compile returns a *PolicyError; failing tests are reported in the results
// (not as an error).
func TestDir(ctx context.Context, dir string) ([]TestResult, error) {
	files, _, err := readPolicyDir(dir)
	if err != nil {
		return nil, err
	}
	p, err := parseFiles(files)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().WithStrict(true).WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(p.modules); compiler.Failed() {
		return nil, astErrorProblems(compiler.Errors)
	}
	return testModules(ctx, p)
}

// nondeterministicBuiltins returns the sorted names of the non-deterministic
// built-ins (time.now_ns, http.send, rand.intn, uuid.rfc4122,
// net.lookup_ip_addr, opa.runtime, ...: those OPA flags Nondeterministic)
// that the compiled policy calls anywhere.
func nondeterministicBuiltins(c *ast.Compiler) []string {
	found := map[string]bool{}
	check := func(op ast.Ref) {
		if b, ok := ast.BuiltinMap[op.String()]; ok && b.IsNondeterministic() {
			found[b.Name] = true
		}
	}
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				check(e.Operator())
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				if ref, ok := call[0].Value.(ast.Ref); ok {
					check(ref)
				}
			}
			return false
		})
	}
	names := make([]string, 0, len(found))
	for n := range found {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
