package authz

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestRuleCache: values and undefined per reference, frames that hide and
// then restore what lies below them, a reset that forgets everything, and
// references whose slices the caller reuses.
func TestRuleCache(t *testing.T) {
	var c ruleCache
	c.reset()
	p, q := ast.MustParseRef("data.a.p"), ast.MustParseRef("data.a.q")
	if v, undef := c.Get(p); v != nil || undef {
		t.Fatalf("empty cache: Get = %v, %v", v, undef)
	}
	c.Put(p, ast.BooleanTerm(true))
	c.Put(q, nil)
	if v, undef := c.Get(p); v == nil || undef || !v.Equal(ast.BooleanTerm(true)) {
		t.Fatalf("Get(p) = %v, %v", v, undef)
	}
	if v, undef := c.Get(q); v != nil || !undef {
		t.Fatalf("Get(q) = %v, %v; want undefined", v, undef)
	}
	if v, _ := c.Get(ast.MustParseRef("data.a")); v != nil {
		t.Fatalf("prefix of a cached ref answered %v", v)
	}

	// The caller reuses its buffer: the cache must have copied the terms.
	buf := ast.MustParseRef("data.a.r")
	c.Put(buf, ast.IntNumberTerm(1))
	buf[2] = ast.StringTerm("s")
	if v, _ := c.Get(ast.MustParseRef("data.a.r")); v == nil {
		t.Fatal("entry lost when the caller reused its ref")
	}
	if v, _ := c.Get(ast.MustParseRef("data.a.s")); v != nil {
		t.Fatalf("entry answered for a ref never put: %v", v)
	}

	c.Push()
	if v, _ := c.Get(p); v != nil {
		t.Fatalf("pushed frame sees the frame below: %v", v)
	}
	c.Put(p, ast.BooleanTerm(false))
	if keys := c.Keys(); len(keys) != 1 || !keys[0].Equal(p) {
		t.Fatalf("Keys in pushed frame = %v", keys)
	}
	c.Pop()
	if v, _ := c.Get(p); v == nil || !v.Equal(ast.BooleanTerm(true)) {
		t.Fatalf("after Pop, Get(p) = %v; want the value below", v)
	}

	// Many entries, so that hashes are chained and looked up.
	for i := range 200 {
		c.Put(ast.MustParseRef("data.many").Append(ast.IntNumberTerm(i)), ast.IntNumberTerm(i))
	}
	for i := range 200 {
		if v, _ := c.Get(ast.MustParseRef("data.many").Append(ast.IntNumberTerm(i))); v == nil || !v.Equal(ast.IntNumberTerm(i)) {
			t.Fatalf("data.many[%d] = %v", i, v)
		}
	}

	c.release()
	c.reset()
	if v, undef := c.Get(p); v != nil || undef {
		t.Fatalf("after reset: Get = %v, %v", v, undef)
	}
}

// TestDeadlineReuse: a state whose timer fired is not pooled again, and a
// pooled state starts uncancelled.
func TestDeadlineReuse(t *testing.T) {
	s := getEvalState(time.Nanosecond)
	for !s.deadline.Cancelled() {
		time.Sleep(time.Millisecond)
	}
	if !s.deadline.timedOut() {
		t.Fatal("fired deadline does not say it timed out")
	}
	putEvalState(s) // dropped: its timer can no longer be stopped
	for range 100 {
		s2 := getEvalState(time.Hour)
		if s2 == s {
			t.Fatal("a state whose timer fired came back from the pool")
		}
		if s2.deadline.Cancelled() {
			t.Fatal("a fresh state starts cancelled")
		}
		putEvalState(s2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	s3 := getEvalState(time.Hour)
	s3.deadline.done = ctx.Done()
	if s3.deadline.Cancelled() {
		t.Fatal("cancelled before the caller cancelled")
	}
	cancel()
	if !s3.deadline.Cancelled() || s3.deadline.timedOut() {
		t.Fatal("caller's cancellation not seen, or taken for a timeout")
	}
	putEvalState(s3)
}

// TestWithKeywordDecisions: `with` pushes frames on the rule memo; values
// memoized under it must not leak out, nor values from outside into it.
func TestWithKeywordDecisions(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": `package meshguard.authz

m := input.request.method

get_under_with if m == "GET" with input.request.method as "GET"

allow if {
	m == "POST"
	get_under_with
	m == "POST"
}
`})
	e, err := New(Config{Dir: dir, SkipTests: true, Timeout: time.Minute}) // no deadline flakes under -race
	if err != nil {
		t.Fatal(err)
	}
	in := benchInput()
	in.Request.Method = "POST"
	for range 3 {
		if d := e.Decide(context.Background(), in); !d.Allow {
			t.Fatalf("denied: %v", d.Reasons)
		}
	}
	in.Request.Method = "GET"
	if d := e.Decide(context.Background(), in); d.Allow {
		t.Fatal("GET allowed")
	}
}
