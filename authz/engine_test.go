package authz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const pkg = "package meshguard.authz\n\n"

// TestFailClosed: every way an evaluation can go wrong is a deny with a
// "policy error: ..." reason, counted as decision="error".
func TestFailClosed(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		policy  string
		ctx     context.Context
		input   *Input
		timeout time.Duration
		// want is the single reason; %s is replaced by the policy file's path.
		want string
	}{
		{
			name:   "evaluation error (conflicting values)",
			policy: "allow := true if input.request.method == \"GET\"\nallow := false if input.request.path == \"/users/42\"\n",
			want:   "policy error: %s:4: eval_conflict_error: rule data.meshguard.authz.allow produced conflicting values:\n  true at %s:3\n  false at %s:4",
		},
		{
			name:   "built-in error (strict)",
			policy: "allow if to_number(input.request.path) > 0\n",
			want:   "policy error: %s:3: eval_builtin_error: to_number: strconv.ParseFloat: parsing \"/users/42\": invalid syntax",
		},
		{
			name:   "undefined decision",
			policy: "allow if input.request.method == \"POST\"\n",
			want:   "policy error: data.meshguard.authz.allow is undefined",
		},
		{
			name:   "non-boolean decision",
			policy: "allow := \"yes\"\n",
			want:   "policy error: data.meshguard.authz.allow is not a boolean (got string)",
		},
		{
			name:   "non-boolean decision (object)",
			policy: "allow := {\"allow\": true}\n",
			want:   "policy error: data.meshguard.authz.allow is not a boolean (got object)",
		},
		{
			name:   "non-string reason",
			policy: "default allow := false\n\nreasons contains 1 if true\n",
			want:   "policy error: data.meshguard.authz.reasons holds a non-string (number)",
		},
		{
			name: "deadline",
			// 81 million iterations: far beyond 20ms on any machine. The
			// bound depends on input so that load-time partial evaluation
			// cannot run it.
			policy:  "allow if {\n\tn := count(input.request.path) * 1000\n\tsome i in numbers.range(1, n)\n\tsome j in numbers.range(1, n)\n\ti * j == -1\n}\n",
			timeout: 20 * time.Millisecond,
			want:    "policy error: evaluation exceeded the 20ms policy timeout",
		},
		{
			name:   "caller went away",
			policy: "allow := true\n",
			ctx:    cancelled,
			want:   "policy error: evaluation cancelled: context canceled",
		},
		{
			name:   "no input",
			policy: "allow := true\n",
			input:  nil,
			want:   "policy error: no input",
		},
		{
			name:   "no policy loaded",
			policy: "allow if {\n", // does not parse
			want:   "policy error: no policy loaded",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, map[string]string{"p.rego": pkg + tc.policy})
			e, reg, _ := testEngine(t, dir, Config{Timeout: tc.timeout, CacheSize: 100})
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			in := webInput()
			if tc.name == "no input" {
				in = nil
			}
			for range 2 { // the second time would come from the cache if errors were cached
				d := e.Decide(ctx, in)
				file := dir + "/p.rego"
				want := strings.ReplaceAll(tc.want, "%s", file)
				if d.Allow || d.Cached || !slices.Equal(d.Reasons, []string{want}) {
					t.Fatalf("decision = allow %v cached %v reasons %q, want deny with %q", d.Allow, d.Cached, d.Reasons, want)
				}
			}
			if got := metricValue(t, reg, "meshguard_authz_decisions_total", "decision", "error"); got != 2 {
				t.Errorf("decisions{error} = %v, want 2", got)
			}
		})
	}
}

// TestLoadRefused: a directory that does not parse, compile, carry the
// decision rule or pass its tests leaves the engine not ready, saying where.
func TestLoadRefused(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // substring of Ready's error; %s is the directory
	}{
		{name: "syntax error", files: map[string]string{"p.rego": pkg + "allow if {\n"}, want: "%s/p.rego:4:0: rego_parse_error: unexpected eof token"},
		{name: "strict: unused variable", files: map[string]string{"p.rego": pkg + "allow if {\n\tx := 1\n}\n"}, want: "%s/p.rego:4:2: rego_compile_error: assigned var x unused"},
		{name: "strict: duplicate import", files: map[string]string{"p.rego": pkg + "import data.a\nimport data.a\n\nallow if a\n"}, want: "%s/p.rego:4:1: rego_compile_error: import must not shadow import data.a"},
		{name: "Rego v0 syntax", files: map[string]string{"p.rego": pkg + "allow { true }\n"}, want: "%s/p.rego:3:1: rego_parse_error: `if` keyword is required before rule body"},
		{name: "no allow rule", files: map[string]string{"p.rego": pkg + "reasons contains \"x\" if true\n"}, want: "no rule defines data.meshguard.authz.allow"},
		{name: "no policy files", files: map[string]string{"data.json": "{}"}, want: "no .rego policy files found"},
		{name: "bad data.json", files: map[string]string{"p.rego": pkg + "allow := true\n", "data.json": "{"}, want: "%s/data.json:1:1: data file is not valid JSON or YAML"},
		{name: "failing test", files: map[string]string{
			"p.rego":      pkg + "allow := false\n",
			"p_test.rego": "package meshguard.authz_test\n\ntest_allows if data.meshguard.authz.allow\n",
		}, want: "policy tests failed (1 of 1):\nFAIL data.meshguard.authz_test.test_allows (%s/p_test.rego:3)"},
		{name: "missing directory", files: nil, want: "reading policy directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, tc.files)
			if tc.files == nil {
				dir += "/missing"
			}
			e, reg, _ := testEngine(t, dir, Config{})
			err := e.Ready()
			want := strings.ReplaceAll(tc.want, "%s", dir)
			if err == nil || !errors.Is(err, ErrNoPolicy) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Ready() = %v, want ErrNoPolicy containing %q", err, want)
			}
			if e.Revision() != "" {
				t.Errorf("Revision() = %q, want none", e.Revision())
			}
			if d := e.Decide(context.Background(), webInput()); d.Allow {
				t.Error("allowed without a policy")
			}
			if got := metricValue(t, reg, "meshguard_policy_reloads_total", "result", "error"); got != 1 {
				t.Errorf("reloads{error} = %v, want 1", got)
			}
		})
	}
}

// TestReloadKeepsLastGood: a revision with a syntax error, then one with a
// failing test, are refused; the last good revision keeps deciding.
func TestReloadKeepsLastGood(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"p.rego":      pkg + "allow if input.request.method == \"GET\"\n",
		"p_test.rego": "package meshguard.authz_test\n\ntest_get if data.meshguard.authz.allow with input as {\"request\": {\"method\": \"GET\"}}\n",
	})
	e, reg, logs := testEngine(t, dir, Config{CacheSize: 100})
	if err := e.Ready(); err != nil {
		t.Fatal(err)
	}
	good := e.Revision()
	ctx := context.Background()
	e.Decide(ctx, webInput()) // fill the cache

	steps := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{name: "syntax error", files: map[string]string{"p.rego": pkg + "allow if {\n"}, wantErr: "rego_parse_error"},
		{name: "failing test", files: map[string]string{"p.rego": pkg + "allow := false\n"}, wantErr: "policy tests failed (1 of 1)"},
	}
	for i, st := range steps {
		writePolicy(t, dir, st.files)
		err := e.Reload(ctx)
		if err == nil || !strings.Contains(err.Error(), st.wantErr) {
			t.Fatalf("%s: Reload() = %v, want error containing %q", st.name, err, st.wantErr)
		}
		if e.Revision() != good || e.Ready() != nil {
			t.Fatalf("%s: revision %q ready %v, want the last good %q", st.name, e.Revision(), e.Ready(), good)
		}
		if d := e.Decide(ctx, webInput()); !d.Allow || d.Revision != good {
			t.Fatalf("%s: decision %+v, want allow by %s", st.name, d, good)
		}
		if got := metricValue(t, reg, "meshguard_policy_reloads_total", "result", "error"); got != float64(i+1) {
			t.Errorf("%s: reloads{error} = %v, want %d", st.name, got, i+1)
		}
		// The same bad revision is not retried (nor counted) on the next poll.
		if err := e.Reload(ctx); !errors.Is(err, errAlreadyRefused) {
			t.Errorf("%s: second Reload() = %v, want errAlreadyRefused", st.name, err)
		}
		if got := metricValue(t, reg, "meshguard_policy_reloads_total", "result", "error"); got != float64(i+1) {
			t.Errorf("%s: reloads{error} after retry = %v, want %d", st.name, got, i+1)
		}
	}

	// A good revision is swapped in and the cache starts empty.
	writePolicy(t, dir, map[string]string{"p.rego": pkg + "allow if input.request.method in {\"GET\", \"HEAD\"}\n"})
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == good {
		t.Fatal("revision did not change")
	}
	if d := e.Decide(ctx, webInput()); !d.Allow || d.Cached || d.Revision != e.Revision() {
		t.Fatalf("after swap: %+v, want an uncached allow by the new revision", d)
	}
	if got := metricValue(t, reg, "meshguard_policy_reloads_total", "result", "success"); got != 2 {
		t.Errorf("reloads{success} = %v, want 2", got)
	}
	if got := metricValue(t, reg, "meshguard_policy_revision_info", "revision", e.Revision()); got != 1 {
		t.Errorf("revision_info{%s} = %v, want 1", e.Revision(), got)
	}
	if got := metricValue(t, reg, "meshguard_policy_revision_info", "revision", good); got != 0 {
		t.Errorf("revision_info of the replaced revision = %v, want it gone", got)
	}
	if !strings.Contains(logs.String(), `"msg":"policy loaded"`) {
		t.Errorf("no load logged: %s", logs)
	}
}

// TestRunPollsDirectory: Run notices a changed directory and swaps, and
// returns when its context ends.
func TestRunPollsDirectory(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": pkg + "allow := false\n"})
	e, _, logs := testEngine(t, dir, Config{PollInterval: 5 * time.Millisecond})
	first := e.Revision()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()

	writePolicy(t, dir, map[string]string{"p.rego": pkg + "allow if {\n"})
	waitFor(t, "the refusal to be logged", func() bool {
		return strings.Contains(logs.String(), "policy reload refused; keeping the last good revision")
	})
	writePolicy(t, dir, map[string]string{"p.rego": pkg + "allow := true\n"})
	waitFor(t, "the new revision", func() bool { return e.Revision() != first })
	if d := e.Decide(context.Background(), webInput()); !d.Allow {
		t.Fatalf("new revision not in force: %+v", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if n := strings.Count(logs.String(), "policy reload refused"); n != 1 {
		t.Errorf("refusal logged %d times, want once per bad revision", n)
	}
}

// TestDecisionCache: hits for the same input, misses for any difference,
// bypass for non-deterministic policies and when disabled.
func TestDecisionCache(t *testing.T) {
	ctx := context.Background()
	t.Run("hit and miss", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"p.rego": pkg + "allow if input.request.headers[\"x-a\"] == \"1\"\n"})
		e, reg, _ := testEngine(t, dir, Config{CacheSize: 100})
		in := webInput()
		in.Request.Headers = map[string]string{"x-a": "1"}
		d1, d2 := e.Decide(ctx, in), e.Decide(ctx, in)
		if d1.Cached || !d2.Cached || !d1.Allow || !d2.Allow || d1.ID == d2.ID {
			t.Fatalf("first %+v, second %+v: want an evaluated then a cached allow with distinct IDs", d1, d2)
		}
		in2 := webInput()
		in2.Request.Headers = map[string]string{"x-a": "2"}
		if d := e.Decide(ctx, in2); d.Cached || d.Allow {
			t.Fatalf("other header value: %+v, want an evaluated deny", d)
		}
		if got := metricValue(t, reg, "meshguard_decision_cache_hits_total"); got != 1 {
			t.Errorf("cache hits = %v, want 1", got)
		}
		if got := metricValue(t, reg, "meshguard_authz_eval_duration_seconds"); got != 2 {
			t.Errorf("evaluations observed = %v, want 2", got)
		}
	})
	t.Run("non-deterministic policy bypasses", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"p.rego": pkg + "allow if time.now_ns() > 0\n\nreasons contains uuid.rfc4122(\"x\") if false\n"})
		e, _, _ := testEngine(t, dir, Config{CacheSize: 100})
		if got := e.Nondeterministic(); !slices.Equal(got, []string{"time.now_ns", "uuid.rfc4122"}) {
			t.Fatalf("Nondeterministic() = %q", got)
		}
		e.Decide(ctx, webInput())
		if d := e.Decide(ctx, webInput()); d.Cached || !d.Allow {
			t.Fatalf("%+v: want an uncached allow", d)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		dir := policyDir(t, map[string]string{"p.rego": pkg + "allow := true\n"})
		e, _, _ := testEngine(t, dir, Config{CacheSize: 0})
		e.Decide(ctx, webInput())
		if d := e.Decide(ctx, webInput()); d.Cached {
			t.Fatal("cached with the cache off")
		}
	})
}

// TestCacheKeyCanonical: equal inputs share a key whatever the map order;
// inputs a policy could tell apart never do.
func TestCacheKeyCanonical(t *testing.T) {
	a, b := webInput(), webInput()
	a.Request.Headers = map[string]string{"x": "1", "y": "2", "z": "3"}
	b.Request.Headers = map[string]string{"z": "3", "x": "1", "y": "2"}
	if a.cacheKey() != b.cacheKey() {
		t.Fatal("same input, different keys")
	}
	variants := map[string]func(in *Input){
		"header name/value boundary": func(in *Input) { in.Request.Headers = map[string]string{"ab": "c"} },
		"header moved":               func(in *Input) { in.Request.Headers = map[string]string{"a": "bc"} },
		"header to query":            func(in *Input) { in.Request.Headers, in.Request.Query = nil, map[string][]string{"a": {"bc"}} },
		"query order":                func(in *Input) { in.Request.Query = map[string][]string{"k": {"v", "w"}} },
		"query order swapped":        func(in *Input) { in.Request.Query = map[string][]string{"k": {"w", "v"}} },
		"path":                       func(in *Input) { in.Request.Path = "/users/43" },
		"method":                     func(in *Input) { in.Request.Method = "HEAD" },
		"host":                       func(in *Input) { in.Request.Host = "users.mesh" },
		"protocol":                   func(in *Input) { in.Request.Protocol = "HTTP/1.1" },
		"source":                     func(in *Input) { in.Source.SPIFFEID = "spiffe://example.org/svc/we" },
		"source trust domain":        func(in *Input) { in.Source.TrustDomain = "example.com" },
		"source service":             func(in *Input) { in.Source.Service = "web2" },
		"destination":                func(in *Input) { in.Destination.SPIFFEID = "spiffe://example.org/svc/x" },
		"destination service":        func(in *Input) { in.Destination.Service = "x" },
		"field boundary":             func(in *Input) { in.Source.TrustDomain, in.Source.Service = "example.orgweb", "" },
	}
	seen := map[string]string{webInput().cacheKey(): "base"}
	for name, mutate := range variants {
		in := webInput()
		mutate(in)
		k := in.cacheKey()
		if prev, ok := seen[k]; ok {
			t.Errorf("%s and %s share a cache key", name, prev)
		}
		seen[k] = name
	}
}

// TestDryRun: the policy's deny is computed, counted apart and returned as
// an allow marked dry_run.
func TestDryRun(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": pkg + "default allow := false\n\nreasons contains \"nope\" if not allow\n"})
	e, reg, _ := testEngine(t, dir, Config{DryRun: true})
	d := e.Decide(context.Background(), webInput())
	if !d.Allow || !d.DryRun || !slices.Equal(d.Reasons, []string{"nope"}) {
		t.Fatalf("%+v: want a dry-run allow that keeps the reasons", d)
	}
	for label, want := range map[string]float64{"dry_run_deny": 1, "deny": 0, "allow": 0} {
		if got := metricValue(t, reg, "meshguard_authz_decisions_total", "decision", label); got != want {
			t.Errorf("decisions{%s} = %v, want %v", label, got, want)
		}
	}
}

// TestDecisionIDs: unique and sortable, also within one millisecond and
// when the clock steps back.
func TestDecisionIDs(t *testing.T) {
	var g idGenerator
	clock := newFakeClock()
	var ids []string
	for i := range 3000 {
		ids = append(ids, g.next(clock.Now()))
		switch {
		case i%1000 == 999:
			clock.Advance(-time.Second) // clock stepped back
		case i%7 == 0:
			clock.Advance(time.Millisecond)
		}
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %d %q not after %q", i, ids[i], ids[i-1])
		}
	}
	if len(ids[0]) != 26 {
		t.Errorf("id %q is not 26 characters", ids[0])
	}
	// The time prefix decodes to the clock: 48 bits of milliseconds.
	var ms uint64
	for _, c := range ids[0][:10] {
		ms = ms<<5 | uint64(strings.IndexRune(crockford, c))
	}
	if want := uint64(newFakeClock().Now().UnixMilli()); ms != want {
		t.Errorf("time prefix = %d, want %d", ms, want)
	}
}

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no dir", cfg: Config{}, want: "creating authz engine: policy directory is required"},
		{name: "negative timeout", cfg: Config{Dir: "x", Timeout: -1}, want: "creating authz engine: timeout, cache size, cache TTL and poll interval must not be negative"},
		{name: "negative cache", cfg: Config{Dir: "x", CacheSize: -1}, want: "creating authz engine: timeout, cache size, cache TTL and poll interval must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || err.Error() != tc.want {
				t.Fatalf("New() = %v, want %q", err, tc.want)
			}
		})
	}
}

func ExampleEngine_Decide() {
	dir, _ := tempPolicyDir(map[string]string{
		"authz.rego": `package meshguard.authz

default allow := false

allow if {
	input.source.service == "web"
	input.request.method == "GET"
}

reasons contains sprintf("%s may not %s", [input.source.service, input.request.method]) if not allow
`,
	})
	defer os.RemoveAll(dir)
	e, err := New(Config{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	in := &Input{
		Source:      Source{SPIFFEID: "spiffe://example.org/svc/web", TrustDomain: "example.org", Service: "web"},
		Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
		Request:     Request{Method: "DELETE", Path: "/users/42", Host: "users", Protocol: "HTTP/2.0"},
	}
	d := e.Decide(context.Background(), in)
	fmt.Println(d.Allow, d.Reasons)
	in.Request.Method = "GET"
	d = e.Decide(context.Background(), in)
	fmt.Println(d.Allow, d.Reasons)
	// Output:
	// false [web may not DELETE]
	// true []
}

// TestNondeterministicPerRequest: time.now_ns is evaluated per request at
// the engine's clock (EvalTime), not folded in when the policy is loaded
// and partially evaluated, and never cached.
func TestNondeterministicPerRequest(t *testing.T) {
	clock := newFakeClock()
	until := clock.Now().Add(time.Second).UnixNano()
	dir := policyDir(t, map[string]string{"p.rego": pkg + fmt.Sprintf("default allow := false\n\nallow if time.now_ns() < %d\n", until)})
	e, _, _ := testEngine(t, dir, Config{Now: clock.Now, CacheSize: 100})
	if d := e.Decide(context.Background(), webInput()); !d.Allow {
		t.Fatalf("before the deadline: %+v", d)
	}
	clock.Advance(2 * time.Second)
	if d := e.Decide(context.Background(), webInput()); d.Allow || d.Cached {
		t.Fatalf("after the deadline: %+v, want an uncached deny", d)
	}
}

// TestConcurrentDecideAndReload: decisions made while revisions swap are
// each made whole by one revision (run with -race).
func TestConcurrentDecideAndReload(t *testing.T) {
	policies := []string{
		pkg + "allow := true\n",
		pkg + "default allow := false\n\nallow if input.request.method == \"GET\"\n",
	}
	dir := policyDir(t, map[string]string{"p.rego": policies[0]})
	a := NewAuditor(&syncWriter{w: new(bytes.Buffer)}, AuditConfig{AllowedRate: 1, Buffer: 16})
	e, _, _ := testEngine(t, dir, Config{CacheSize: 64, Audit: a})
	stop := runAuditor(t, a)
	defer stop()
	revs := map[string]bool{e.Revision(): true}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			for i := 0; ctx.Err() == nil; i++ {
				in := webInput()
				in.Request.Path = fmt.Sprintf("/users/%d", (i+w)%8)
				if d := e.Authorize(context.Background(), in, ""); !d.Allow || d.Revision == "" || len(d.Reasons) != 0 {
					errs <- fmt.Errorf("decision %+v", d)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range 10 {
		writePolicy(t, dir, map[string]string{"p.rego": policies[(i+1)%2] + fmt.Sprintf("\n# revision %d\n", i)})
		if err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		revs[e.Revision()] = true
	}
	cancel()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(revs) != 11 {
		t.Errorf("%d revisions, want 11", len(revs))
	}
}

func TestStatus(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": pkg + "allow := true\n"})
	e, _, _ := testEngine(t, dir, Config{CacheSize: 10, DryRun: true})
	st := e.Status()
	if !st.Ready || st.Revision != e.Revision() || !st.Cache || !st.DryRun || st.Error != "" || !slices.Equal(st.Files, []string{"p.rego"}) {
		t.Fatalf("status %+v", st)
	}
	writePolicy(t, dir, map[string]string{"p.rego": pkg + "allow if {\n"})
	if err := e.Reload(context.Background()); err == nil {
		t.Fatal("bad revision loaded")
	}
	if st := e.Status(); !st.Ready || !strings.Contains(st.Error, "rego_parse_error") {
		t.Fatalf("after a refused reload: %+v", st)
	}
	empty, _, _ := testEngine(t, t.TempDir(), Config{})
	if st := empty.Status(); st.Ready || !strings.Contains(st.Error, "no policy loaded") {
		t.Fatalf("no policy: %+v", st)
	}
}

func TestOpenAuditLog(t *testing.T) {
	var stderr bytes.Buffer
	w, closeFn, err := OpenAuditLog("-", &stderr)
	if err != nil || w != &stderr || closeFn() != nil {
		t.Fatalf("stderr sink: %v %v", w, err)
	}
	path := t.TempDir() + "/audit.log"
	w, closeFn, err = OpenAuditLog(path, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w, "line")
	if err := closeFn(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("audit log mode %v, %v; want 0600", st.Mode(), err)
	}
	if _, _, err := OpenAuditLog(t.TempDir()+"/missing/audit.log", &stderr); err == nil || !strings.HasPrefix(err.Error(), "opening audit log: ") {
		t.Fatalf("err = %v", err)
	}
}

// TestReloadMissingDirectory: a directory that disappears (a ConfigMap
// being swapped, an unmounted volume) keeps the last good revision and is
// counted once, not on every poll.
func TestReloadMissingDirectory(t *testing.T) {
	parent := t.TempDir()
	dir := parent + "/policies"
	writePolicy(t, dir, map[string]string{"p.rego": pkg + "allow := true\n"})
	e, reg, _ := testEngine(t, dir, Config{})
	good := e.Revision()
	if err := os.Rename(dir, parent+"/gone"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "reading policy directory") {
			t.Fatalf("Reload() = %v", err)
		}
	}
	if got := metricValue(t, reg, "meshguard_policy_reloads_total", "result", "error"); got != 1 {
		t.Errorf("reloads{error} = %v, want 1", got)
	}
	if e.Revision() != good || !e.Decide(context.Background(), webInput()).Allow {
		t.Fatal("last good revision lost")
	}
	if err := os.Rename(parent+"/gone", dir); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil || e.Revision() != good {
		t.Fatalf("back: %v, revision %s", err, e.Revision())
	}
	if st := e.Status(); st.Error != "" {
		t.Errorf("status still reports %q", st.Error)
	}
}
