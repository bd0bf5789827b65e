package authz

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// benchInput is a typical allowed request against the shipped policy set.
func benchInput() *Input {
	return &Input{
		Source:      Source{SPIFFEID: "spiffe://example.org/svc/web", TrustDomain: "example.org", Service: "web"},
		Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
		Request: Request{
			Method: "GET", Path: "/users/42",
			Query:   map[string][]string{"fields": {"name", "email"}},
			Headers: map[string]string{"accept": "application/json", "user-agent": "curl/8", "x-request-id": "7f3c2a"},
			Host:    "users", Protocol: "HTTP/2.0",
		},
	}
}

func benchEngine(b *testing.B, cacheSize int) *Engine {
	b.Helper()
	e, err := New(Config{Dir: "../policies", CacheSize: cacheSize, SkipTests: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Ready(); err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkDecideUncached is one full policy evaluation of the shipped
// policy set per decision (cache off). Target: ≤ 20µs.
func BenchmarkDecideUncached(b *testing.B) {
	e := benchEngine(b, 0)
	in := benchInput()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, in); !d.Allow {
			b.Fatalf("denied: %v", d.Reasons)
		}
	}
}

// BenchmarkDecideUncachedDeny is the denial path (reasons computed).
func BenchmarkDecideUncachedDeny(b *testing.B) {
	e := benchEngine(b, 0)
	in := benchInput()
	in.Request.Method = "DELETE"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, in); d.Allow {
			b.Fatal("allowed")
		}
	}
}

// BenchmarkDecideCached answers the same input from the decision cache.
// Target: ≤ 1µs.
func BenchmarkDecideCached(b *testing.B) {
	e := benchEngine(b, DefaultCacheSize)
	in := benchInput()
	ctx := context.Background()
	e.Decide(ctx, in)
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, in); !d.Allow || !d.Cached {
			b.Fatalf("allow=%v cached=%v", d.Allow, d.Cached)
		}
	}
}

// BenchmarkDecideFloor is the same path with a one-line policy (allow :=
// true): the cost of the engine and of one OPA evaluation, against which the
// shipped policy's own cost can be read.
func BenchmarkDecideFloor(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package meshguard.authz\n\nallow := true\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	e, err := New(Config{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, in)
	}
}

// BenchmarkInputConversion is the Input → ast.Value conversion alone.
func BenchmarkInputConversion(b *testing.B) {
	keys, in := newInputKeys(), benchInput()
	b.ReportAllocs()
	for b.Loop() {
		keys.astValue(in)
	}
}
