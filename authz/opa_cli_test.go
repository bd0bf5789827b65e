package authz

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/topdown"
)

// opaCLI builds the real OPA command once per test binary, at the version
// go.mod pins, with `go install module@version` (the OPA command's own
// dependencies are not all in meshguard's go.sum, so `go build` from this
// module cannot link it; the module proxy and build cache make the install
// a one-time cost).
var opaCLI = struct {
	once sync.Once
	dir  string
	path string
	err  error
}{}

func TestMain(m *testing.M) {
	code := m.Run()
	if opaCLI.dir != "" {
		os.RemoveAll(opaCLI.dir)
	}
	os.Exit(code)
}

func opaBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the OPA command; skipped with -short")
	}
	opaCLI.once.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/open-policy-agent/opa").Output()
		if err != nil {
			opaCLI.err = err
			return
		}
		version := strings.TrimSpace(string(out))
		opaCLI.dir, opaCLI.err = os.MkdirTemp("", "meshguard-opa-")
		if opaCLI.err != nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/open-policy-agent/opa@"+version)
		cmd.Env = append(os.Environ(), "GOBIN="+opaCLI.dir, "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			opaCLI.err = &installError{version: version, out: string(out), err: err}
			return
		}
		opaCLI.path = filepath.Join(opaCLI.dir, "opa")
	})
	if opaCLI.err != nil {
		t.Fatalf("building the OPA command: %v", opaCLI.err)
	}
	return opaCLI.path
}

type installError struct {
	version, out string
	err          error
}

func (e *installError) Error() string {
	return "go install github.com/open-policy-agent/opa@" + e.version + ": " + e.err.Error() + "\n" + e.out
}

// TestShippedPoliciesWithOPA: the shipped policy set passes the real
// `opa test` and the strict `opa check`, so users can keep using OPA's own
// tools on it, and its tests cover every line of every rule.
func TestShippedPoliciesWithOPA(t *testing.T) {
	opa := opaBinary(t)
	for _, args := range [][]string{
		{"test", "../policies"},
		{"check", "--strict", "../policies"},
	} {
		out, err := exec.Command(opa, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("opa %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "test" && !strings.HasPrefix(string(out), "PASS: ") {
			t.Errorf("opa test: %s", out)
		}
	}
	out, err := exec.Command(opa, "test", "--coverage", "--format", "json", "../policies").Output()
	if err != nil {
		t.Fatalf("opa test --coverage: %v", err)
	}
	var report struct {
		Coverage float64 `json:"coverage"`
		Files    map[string]struct {
			NotCovered []any `json:"not_covered"`
		} `json:"files"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("opa test --coverage output: %v", err)
	}
	if report.Coverage != 100 {
		for f, c := range report.Files {
			if len(c.NotCovered) > 0 {
				t.Errorf("%s: not covered by tests: %v", f, c.NotCovered)
			}
		}
		t.Errorf("coverage %.1f%%, want 100%%", report.Coverage)
	}
}

// TestShippedPoliciesWithMeshguard: the same tests through the engine's
// tester, all passing, and the shipped set loads (tests included) as a
// revision.
func TestShippedPoliciesWithMeshguard(t *testing.T) {
	results, err := TestDir(t.Context(), "../policies")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 20 {
		t.Errorf("only %d tests found", len(results))
	}
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s", r)
		}
	}
	e, _, _ := testEngine(t, "../policies", Config{})
	if err := e.Ready(); err != nil {
		t.Fatal(err)
	}
	if nd := e.Nondeterministic(); len(nd) != 0 {
		t.Errorf("shipped policies call non-deterministic built-ins %q: the cache would be off", nd)
	}
}

// TestPartialEvalAgreesWithRules: for every combination of callers,
// destinations, methods, paths and headers the shipped data mentions (and
// some it does not), the decision of the partially evaluated queries equals
// the one of the rules as written — the rules `opa test` checks.
func TestPartialEvalAgreesWithRules(t *testing.T) {
	e, _, _ := testEngine(t, "../policies", Config{Timeout: time.Minute})
	if err := e.Ready(); err != nil {
		t.Fatal(err)
	}
	set := e.current.Load()
	n := 0
	for _, caller := range []string{"web", "billing", "admin", "ops", "stranger"} {
		for _, domain := range []string{"example.org", "evil.org"} {
			for _, dest := range []string{"users", "orders", "payments"} {
				for _, method := range []string{"GET", "POST", "PUT", "DELETE", "TRACE", "CONNECT"} {
					for _, path := range []string{"/", "/users", "/users/42", "/users/42/billing", "/admin", "/admin/keys", "/internal/x", "/orders/1/2"} {
						for _, headers := range []map[string]string{nil, {"x-tenant": "acme"}, {"x-tenant": "other"}} {
							in := &Input{
								Source:      Source{SPIFFEID: "spiffe://" + domain + "/svc/" + caller, TrustDomain: domain, Service: caller},
								Destination: Destination{SPIFFEID: "spiffe://example.org/svc/" + dest, Service: dest},
								Request:     Request{Method: method, Path: path, Headers: headers, Host: dest, Protocol: "HTTP/2.0"},
							}
							now := time.Now()
							allow, reasons, err := e.eval(t.Context(), set, in, now, nil)
							wantAllow, wantReasons, wantErr := e.eval(t.Context(), set, in, now, offTracer{})
							if err != nil || wantErr != nil || allow != wantAllow || !slices.Equal(reasons, wantReasons) {
								t.Fatalf("%+v:\npartial: %v %q %v\nrules:   %v %q %v", in, allow, reasons, err, wantAllow, wantReasons, wantErr)
							}
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d inputs agree", n)
}

// offTracer selects the rules-as-written query in eval without the cost of
// tracing: it is disabled, so OPA never calls it.
type offTracer struct{}

func (offTracer) Enabled() bool               { return false }
func (offTracer) TraceEvent(topdown.Event)    {}
func (offTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }
