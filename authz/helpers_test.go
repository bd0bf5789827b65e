package authz

import (
	"github.com/meshguard/meshguard/internal/clock"

	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// writePolicy writes files (relative name → content) into dir, creating
// subdirectories, and removes the files given an empty content.
func writePolicy(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if content == "" {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		// Write then rename, as an editor or a deploy would: a poll never
		// sees half a file.
		tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// policyDir returns a fresh directory holding files.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writePolicy(t, dir, files)
	return dir
}

func newFakeClock() *clock.Fake { return clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) }

// testEngine builds an engine on dir with a private registry and a log
// buffer; cfg's Dir, Registerer, Logger and Now are filled in when empty.
func testEngine(t *testing.T, dir string, cfg Config) (*Engine, *prometheus.Registry, *syncWriter) {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &syncWriter{w: new(bytes.Buffer)}
	cfg.Dir = dir
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	if cfg.Now == nil {
		cfg.Now = newFakeClock().Now
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, reg, logs
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// String returns what was written so far; safe while writes go on.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// Bytes is String as bytes.
func (s *syncWriter) Bytes() []byte { return []byte(s.String()) }

// metricValue reads one counter (or a histogram's count) from reg; labels
// are name=value pairs. Absent metrics read as 0.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, labels []string) bool {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// webInput is web GETting /users/42 on users, as in DESIGN.md.
func webInput() *Input {
	return &Input{
		Source:      Source{SPIFFEID: "spiffe://example.org/svc/web", TrustDomain: "example.org", Service: "web"},
		Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
		Request: Request{Method: "GET", Path: "/users/42", Query: map[string][]string{"k": {"v"}},
			Headers: map[string]string{"accept": "*/*"}, Host: "users", Protocol: "HTTP/2.0"},
	}
}

// auditLines parses JSON lines.
func auditLines(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tempPolicyDir is policyDir for examples, which have no *testing.T.
func tempPolicyDir(files map[string]string) (string, error) {
	dir, err := os.MkdirTemp("", "meshguard-example-")
	if err != nil {
		return "", err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}
