package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// auditPolicy denies DELETE with a reason quoting the caller's credentials
// (as a careless policy might) and allows the rest.
const auditPolicy = pkg + `default allow := false

allow if input.request.method != "DELETE"

reasons contains sprintf("DELETE refused for %s with %s / %s / %s / %s", [
	input.source.service,
	input.request.headers.authorization,
	split(input.request.headers.authorization, " ")[1],
	input.request.headers.cookie,
	input.request.headers["proxy-authorization"],
]) if not allow
`

// runAuditor starts a's Run and returns a function that stops it and waits.
func runAuditor(t *testing.T, a *Auditor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Auditor.Run() = %v", err)
		}
	}
}

// TestAuditRecord: a denial is one JSON line with exactly DESIGN.md's
// fields, and no credential from the request appears anywhere in it.
func TestAuditRecord(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		t.Run(map[bool]string{false: "enforcing", true: "dry-run"}[dryRun], func(t *testing.T) {
			var sink bytes.Buffer
			clock := newFakeClock()
			a := NewAuditor(&syncWriter{w: &sink}, AuditConfig{Now: clock.Now})
			dir := policyDir(t, map[string]string{"p.rego": auditPolicy})
			e, _, _ := testEngine(t, dir, Config{Audit: a, DryRun: dryRun, Now: clock.Now, CacheSize: 10})
			stop := runAuditor(t, a)

			in := webInput()
			in.Request.Method = "DELETE"
			in.Request.Headers = map[string]string{
				"authorization":       "Bearer s3cr3t-t0ken",
				"cookie":              "session=c00kie-value; theme=dark",
				"proxy-authorization": "Basic cHJveHk6cGFzcw==",
			}
			d := e.Authorize(context.Background(), in, "10.0.0.7:52100")
			e.Authorize(context.Background(), webInput(), "10.0.0.7:52101") // an allow: not audited by default
			stop()

			if d.Allow != dryRun {
				t.Fatalf("Allow = %v with dry-run %v", d.Allow, dryRun)
			}
			for _, secret := range []string{"s3cr3t-t0ken", "c00kie-value", "cHJveHk6cGFzcw=="} {
				if strings.Contains(sink.String(), secret) {
					t.Errorf("audit log contains %q:\n%s", secret, sink.String())
				}
				for _, r := range d.Reasons {
					if strings.Contains(r, secret) {
						t.Errorf("decision reason contains %q: %q", secret, r)
					}
				}
			}
			lines := auditLines(t, sink.Bytes())
			if len(lines) != 1 {
				t.Fatalf("%d audit lines, want 1:\n%s", len(lines), sink.String())
			}
			want := map[string]any{
				"time":            clock.Now().Format(time.RFC3339Nano),
				"msg":             "request denied",
				"decision_id":     d.ID,
				"source_id":       "spiffe://example.org/svc/web",
				"destination_id":  "spiffe://example.org/svc/users",
				"service":         "users",
				"method":          "DELETE",
				"path":            "/users/42",
				"reasons":         []any{"DELETE refused for web with [REDACTED] / [REDACTED] / [REDACTED] / [REDACTED]"},
				"policy_revision": e.Revision(),
				"dry_run":         dryRun,
				"remote_addr":     "10.0.0.7:52100",
			}
			got, _ := json.Marshal(lines[0])
			wantJSON, _ := json.Marshal(want)
			if string(got) != string(wantJSON) {
				t.Errorf("audit record\n got %s\nwant %s", got, wantJSON)
			}
		})
	}
}

// TestAuditAllowedSampling: --audit-allowed RATE logs that fraction of
// allows as "request allowed"; denials are always logged.
func TestAuditAllowedSampling(t *testing.T) {
	tests := []struct {
		name       string
		rate       float64
		samples    []float64 // what Sample returns, in turn
		wantAllows int
	}{
		{name: "off", rate: 0, samples: []float64{0, 0, 0, 0}, wantAllows: 0},
		{name: "all", rate: 1, samples: []float64{0, 0.5, 0.99, 0.999}, wantAllows: 4},
		{name: "a quarter", rate: 0.25, samples: []float64{0.1, 0.3, 0.7, 0.2}, wantAllows: 2},
		{name: "clamped above 1", rate: 7, samples: []float64{0.9, 0.9, 0.9, 0.9}, wantAllows: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sink bytes.Buffer
			i := 0
			a := NewAuditor(&syncWriter{w: &sink}, AuditConfig{AllowedRate: tc.rate, Sample: func() float64 { i++; return tc.samples[i-1] }})
			dir := policyDir(t, map[string]string{"p.rego": auditPolicy})
			e, _, _ := testEngine(t, dir, Config{Audit: a})
			for range 4 {
				e.Authorize(context.Background(), webInput(), "")
			}
			deny := webInput()
			deny.Request.Method = "DELETE"
			e.Authorize(context.Background(), deny, "")
			runAuditor(t, a)()
			allows, denials := 0, 0
			for _, l := range auditLines(t, sink.Bytes()) {
				switch l["msg"] {
				case "request allowed":
					allows++
					if r, ok := l["reasons"].([]any); !ok || len(r) != 0 {
						t.Errorf("allow record reasons = %v, want []", l["reasons"])
					}
				case "request denied":
					denials++
				}
			}
			if allows != tc.wantAllows || denials != 1 {
				t.Errorf("allows %d denials %d, want %d and 1", allows, denials, tc.wantAllows)
			}
		})
	}
}

// stallWriter blocks every Write until release is closed.
type stallWriter struct {
	release chan struct{}
	started chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestAuditStalledSinkDrops: with the writer stuck, Authorize still
// returns at once; records past the buffer are dropped and counted, and
// everything buffered is written once the writer recovers.
func TestAuditStalledSinkDrops(t *testing.T) {
	w := &stallWriter{release: make(chan struct{}), started: make(chan struct{})}
	reg := prometheus.NewRegistry()
	a := NewAuditor(w, AuditConfig{Buffer: 3, Registerer: reg})
	dir := policyDir(t, map[string]string{"p.rego": pkg + "default allow := false\n"})
	e, _, _ := testEngine(t, dir, Config{Audit: a})
	stop := runAuditor(t, a)

	e.Authorize(context.Background(), webInput(), "")
	<-w.started // Run is now stuck inside Write with the first record

	const n = 20
	done := make(chan struct{})
	go func() {
		for range n {
			e.Authorize(context.Background(), webInput(), "")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Authorize blocked on a stalled audit sink")
	}
	dropped := metricValue(t, reg, "meshguard_audit_dropped_total")
	if dropped != n-3 {
		t.Errorf("dropped = %v, want %d (buffer 3)", dropped, n-3)
	}
	close(w.release)
	stop()
	if got := len(auditLines(t, w.buf.Bytes())); got != 1+3 {
		t.Errorf("%d lines written, want 4 (the one in flight and the 3 buffered)", got)
	}
}

// TestAuditFinalFlush: records still buffered when Run's context ends are
// all written before Run returns.
func TestAuditFinalFlush(t *testing.T) {
	var sink bytes.Buffer
	a := NewAuditor(&syncWriter{w: &sink}, AuditConfig{Buffer: 500})
	dir := policyDir(t, map[string]string{"p.rego": pkg + "default allow := false\n"})
	e, _, _ := testEngine(t, dir, Config{Audit: a})
	for range 500 {
		e.Authorize(context.Background(), webInput(), "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts already stopped: it must still flush
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(auditLines(t, sink.Bytes())); got != 500 {
		t.Errorf("%d lines flushed, want 500", got)
	}
}

func TestRedactReasons(t *testing.T) {
	headers := map[string]string{"authorization": "Bearer abc.def.ghi", "cookie": "a=1; sid=xyz123", "x-other": "visible"}
	got := redactReasons([]string{
		"token Bearer abc.def.ghi", "raw abc.def.ghi", "sid xyz123", "other visible", "no secret",
	}, headers)
	want := []string{"token [REDACTED]", "raw [REDACTED]", "sid [REDACTED]", "other visible", "no secret"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reason %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// TestPolicyErrorRedacted: an error message that quotes a credential (here
// a built-in's argument) is redacted like a reason.
func TestPolicyErrorRedacted(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": pkg + "allow if to_number(input.request.headers.authorization) > 0\n"})
	e, _, _ := testEngine(t, dir, Config{})
	in := webInput()
	in.Request.Headers = map[string]string{"authorization": "Bearer s3cr3t-t0ken"}
	d := e.Decide(context.Background(), in)
	want := "policy error: " + dir + `/p.rego:3: eval_builtin_error: to_number: strconv.ParseFloat: parsing "[REDACTED]": invalid syntax`
	if d.Allow || len(d.Reasons) != 1 || d.Reasons[0] != want {
		t.Fatalf("reasons %q, want [%q]", d.Reasons, want)
	}
}
