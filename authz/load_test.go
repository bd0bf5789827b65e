package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestLoadLayout: data files are placed by directory as OPA does, YAML
// works, dot-names (editor files, a ConfigMap's ..data) are skipped, and
// the revision changes with any content but not with a re-read.
func TestLoadLayout(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"p.rego": pkg + `default allow := false

allow if {
	input.source.service in data.callers
	data.limits.paths[input.request.path]
}
`,
		"data.json":              `{"callers": ["web"]}`,
		"limits/data.yaml":       "paths:\n  /users/42: true\n",
		".hidden/broken.rego":    "this is not rego",
		"..data/data.json":       `{"callers": "not a list"}`,
		"notes.txt":              "ignored",
		"examples/input.example": "{}",
	})
	e, _, _ := testEngine(t, dir, Config{})
	if err := e.Ready(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), webInput()); !d.Allow {
		t.Fatalf("%+v", d)
	}
	_, rev1, err := readPolicyDir(dir)
	if err != nil || rev1 != e.Revision() {
		t.Fatalf("re-read revision %q (%v), want %q", rev1, err, e.Revision())
	}
	writePolicy(t, dir, map[string]string{"limits/data.yaml": "paths:\n  /users/43: true\n"})
	if _, rev2, _ := readPolicyDir(dir); rev2 == rev1 {
		t.Fatal("revision did not change with data")
	}
	writePolicy(t, dir, map[string]string{"notes.txt": "still ignored, changed"})
	writePolicy(t, dir, map[string]string{"limits/data.yaml": "paths:\n  /users/42: true\n"})
	if _, rev3, _ := readPolicyDir(dir); rev3 != rev1 {
		t.Fatal("revision depends on files that are not loaded")
	}
}

// TestDataConflicts: two data files that claim the same path are refused.
func TestDataConflicts(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"p.rego":       pkg + "allow := true\n",
		"data.json":    `{"a": {"b": 1}}`,
		"a/data.json":  `{"b": 2}`,
		"a/data.yaml":  "c: 3\n",
		"x/y/data.yml": "z: 1\n",
	})
	e, _, _ := testEngine(t, dir, Config{})
	if err := e.Ready(); err == nil || !strings.Contains(err.Error(), "data at a conflicts with another data file") {
		t.Fatalf("Ready() = %v, want a data conflict", err)
	}
}

// TestHostileInput: inputs no well-behaved proxy would send still get a
// decision, never a panic, and never share a cache entry with a
// near-identical input.
func TestHostileInput(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": pkg + `default allow := false

allow if {
	input.request.path == "/ok"
	not input.request.headers["x-evil"]
}
`})
	e, _, _ := testEngine(t, dir, Config{CacheSize: 1000})
	many := map[string]string{}
	for i := range 200 {
		many[fmt.Sprintf("x-h%03d", i)] = strings.Repeat("v", i)
	}
	tests := []struct {
		name  string
		mut   func(*Input)
		allow bool
	}{
		{name: "empty input", mut: func(in *Input) { *in = Input{} }},
		{name: "nil maps", mut: func(in *Input) { in.Request.Path, in.Request.Headers, in.Request.Query = "/ok", nil, nil }, allow: true},
		{name: "invalid UTF-8 path", mut: func(in *Input) { in.Request.Path = "/ok\xff" }},
		{name: "NUL in path", mut: func(in *Input) { in.Request.Path = "/ok\x00" }},
		{name: "200 headers", mut: func(in *Input) { in.Request.Path, in.Request.Headers = "/ok", many }, allow: true},
		{name: "200 headers and an evil one", mut: func(in *Input) {
			h := map[string]string{"x-evil": "1"}
			for k, v := range many {
				h[k] = v
			}
			in.Request.Path, in.Request.Headers = "/ok", h
		}},
		{name: "1 MiB header", mut: func(in *Input) {
			in.Request.Path, in.Request.Headers = "/ok", map[string]string{"x-big": strings.Repeat("a", 1<<20)}
		}, allow: true},
		{name: "empty query values", mut: func(in *Input) { in.Request.Path, in.Request.Query = "/ok", map[string][]string{"": nil, "k": {}} }, allow: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := webInput()
			tc.mut(in)
			for range 2 {
				if d := e.Decide(context.Background(), in); d.Allow != tc.allow {
					t.Fatalf("allow = %v, want %v (%v)", d.Allow, tc.allow, d.Reasons)
				}
			}
		})
	}
}

// TestNoGoroutineLeak: Run and Auditor.Run leave nothing behind (with the
// cache off: expirable's cleanup goroutine cannot be stopped).
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := policyDir(t, map[string]string{"p.rego": pkg + "default allow := false\n"})
	a := NewAuditor(&syncWriter{w: new(bytes.Buffer)}, AuditConfig{})
	e, _, _ := testEngine(t, dir, Config{Audit: a, PollInterval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { e.Run(ctx); done <- struct{}{} }()
	go func() { a.Run(ctx); done <- struct{}{} }()
	for range 50 {
		e.Authorize(context.Background(), webInput(), "")
	}
	cancel()
	<-done
	<-done
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

// TestInputValueMatchesJSON: the direct conversion gives exactly the value
// OPA would build from the input's JSON (DESIGN.md's document), on first
// sight and when interned terms are reused.
func TestInputValueMatchesJSON(t *testing.T) {
	keys := newInputKeys()
	inputs := []*Input{webInput(), benchInput(), {
		Source:      Source{SPIFFEID: "spiffe://other.org/svc/web", TrustDomain: "other.org", Service: "web"},
		Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
		Request: Request{Method: "PATCH", Path: "/a/b", Query: map[string][]string{"a": {}, "b": {"1", "2"}},
			Headers: map[string]string{"x": "", "authorization": "Bearer t"}, Host: "users.mesh", Protocol: "HTTP/1.1"},
	}}
	for round := range 2 {
		for i, in := range inputs {
			data, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			want, err := ast.InterfaceToValue(doc)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys.astValue(in); got.Compare(want) != 0 {
				t.Errorf("round %d input %d:\n got %v\nwant %v", round, i, got, want)
			}
		}
	}
}

// TestInternTableBounded: a full table stops growing; lookups still work.
func TestInternTableBounded(t *testing.T) {
	tab := internTable[string]{limit: 3}
	for i := range 10 {
		s := fmt.Sprint(i)
		if got := tab.put(s, ast.StringTerm(s)); got.Value.Compare(ast.String(s)) != 0 {
			t.Fatalf("put(%q) returned %v", s, got)
		}
	}
	if n := len(*tab.m.Load()); n != 3 {
		t.Fatalf("table holds %d terms, want 3", n)
	}
	if _, ok := tab.get("9"); ok {
		t.Error("value past the bound was interned")
	}
	if v, ok := tab.get("0"); !ok || v.Value.Compare(ast.String("0")) != 0 {
		t.Error("interned value lost")
	}
}
