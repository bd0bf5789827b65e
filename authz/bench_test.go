package authz

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/cputime"
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

// loop runs op b.N times (b.Loop) and also reports CPU time per op.
func loop(b *testing.B, op func()) {
	b.ReportAllocs()
	start, ok := cputime.Process()
	for b.Loop() {
		op()
	}
	if end, ok2 := cputime.Process(); ok && ok2 && b.N > 0 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}

func benchEngine(b *testing.B, cacheSize int) *Engine {
	b.Helper()
	// A generous deadline: on a loaded machine (or under a profiler) a
	// single evaluation can pass 100ms, and a policy-error deny would end
	// the benchmark.
	e, err := New(Config{Dir: "../policies", CacheSize: cacheSize, SkipTests: true, Timeout: 10 * time.Second})
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
	loop(b, func() {
		if d := e.Decide(ctx, in); !d.Allow {
			b.Fatalf("denied: %v", d.Reasons)
		}
	})
}

// BenchmarkDecideUncachedDeny is the denial path (reasons computed).
func BenchmarkDecideUncachedDeny(b *testing.B) {
	e := benchEngine(b, 0)
	in := benchInput()
	in.Request.Method = "DELETE"
	ctx := context.Background()
	loop(b, func() {
		if d := e.Decide(ctx, in); d.Allow {
			b.Fatal("allowed")
		}
	})
}

// BenchmarkDecideCached answers the same input from the decision cache.
// Target: ≤ 1µs.
func BenchmarkDecideCached(b *testing.B) {
	e := benchEngine(b, DefaultCacheSize)
	in := benchInput()
	ctx := context.Background()
	e.Decide(ctx, in)
	loop(b, func() {
		if d := e.Decide(ctx, in); !d.Allow || !d.Cached {
			b.Fatalf("allow=%v cached=%v", d.Allow, d.Cached)
		}
	})
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
	loop(b, func() { e.Decide(ctx, in) })
}

// BenchmarkInputConversion is the Input → ast.Value conversion alone.
func BenchmarkInputConversion(b *testing.B) {
	keys, in := newInputKeys(), benchInput()
	loop(b, func() { keys.astValue(in) })
}
