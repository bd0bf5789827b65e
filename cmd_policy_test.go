package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestPolicyTestCommand(t *testing.T) {
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "p.rego"), []byte("package meshguard.authz\n\nallow if {\n\tx := 1\n}\n"), 0o644)
	failing := t.TempDir()
	os.WriteFile(filepath.Join(failing, "p.rego"), []byte("package meshguard.authz\n\nallow := false\n"), 0o644)
	os.WriteFile(filepath.Join(failing, "p_test.rego"), []byte("package meshguard.authz_test\n\ntest_allow if data.meshguard.authz.allow\n"), 0o644)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "shipped policies pass", args: []string{"policy", "test", "policies"}, wantCode: 0, wantOut: "PASS: "},
		{name: "verbose lists each test", args: []string{"policy", "test", "-v", "policies"}, wantCode: 0, wantOut: "PASS data.meshguard.authz_test.test_deny_overrides_grant (policies/deny_test.rego:7)"},
		{name: "compile error with location", args: []string{"policy", "test", bad}, wantCode: 2, wantErr: filepath.Join(bad, "p.rego") + ":4:2: rego_compile_error: assigned var x unused"},
		{name: "failing test", args: []string{"policy", "test", failing}, wantCode: 1, wantOut: "FAIL data.meshguard.authz_test.test_allow (" + filepath.Join(failing, "p_test.rego") + ":3)\nFAIL: 1/1"},
		{name: "no directory given", args: []string{"policy", "test"}, wantCode: 2, wantErr: "give the policy directory"},
		{name: "missing directory", args: []string{"policy", "test", "/nonexistent"}, wantCode: 2, wantErr: "policy directory: stat /nonexistent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, out, errb := testEnv(nil)
			if got := run(context.Background(), tc.args, env); got != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tc.wantCode, out, errb)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q does not contain %q", out, tc.wantOut)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q does not contain %q", errb, tc.wantErr)
			}
		})
	}
}

func TestPolicyEvalCommand(t *testing.T) {
	dir := t.TempDir()
	unknownField := filepath.Join(dir, "typo.json")
	os.WriteFile(unknownField, []byte(`{"source": {"spiffeid": "x"}}`), 0o644)
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "p.rego"), []byte("package meshguard.authz\n\nallow if {\n"), 0o644)

	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantCode    int
		wantAllow   bool
		wantReasons []string
		wantOut     string
		wantErr     string
	}{
		{name: "allowed", args: []string{"--policy", "policies", "--input", "policies/examples/web-reads-user.input"}, wantAllow: true},
		{name: "method not granted", args: []string{"--policy", "policies", "--input", "policies/examples/web-deletes-user.input"},
			wantReasons: []string{`no grant lets spiffe://example.org/svc/web call DELETE /users/42 on service "users"`}},
		{name: "header match", args: []string{"--policy", "policies", "--input", "policies/examples/billing-writes-with-tenant.input"}, wantAllow: true},
		{name: "deny override", args: []string{"--policy", "policies", "--input", "policies/examples/admin-hits-deny-override.input"},
			wantReasons: []string{"admin endpoints are reserved for the ops service"}},
		{name: "policy from the environment", args: []string{"--input", "policies/examples/web-reads-user.input"}, env: map[string]string{"MESHGUARD_POLICY": "policies"}, wantAllow: true},
		{name: "explain", args: []string{"--policy", "policies", "--input", "policies/examples/admin-hits-deny-override.input", "--explain"},
			wantReasons: []string{"admin endpoints are reserved for the ops service"},
			wantOut:     "rules true for this input:\n"},
		{name: "missing input flag", args: []string{"--policy", "policies"}, wantCode: 2, wantErr: "--input is required"},
		{name: "unknown input field", args: []string{"--policy", "policies", "--input", unknownField}, wantCode: 2, wantErr: `json: unknown field "spiffeid"`},
		{name: "unreadable input", args: []string{"--policy", "policies", "--input", "/nonexistent.json"}, wantCode: 2, wantErr: "reading input"},
		{name: "policy does not parse", args: []string{"--policy", bad, "--input", "policies/examples/web-reads-user.input"}, wantCode: 2,
			wantErr: filepath.Join(bad, "p.rego") + ":4:0: rego_parse_error: unexpected eof token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, out, errb := testEnv(tc.env)
			args := append([]string{"policy", "eval"}, tc.args...)
			if got := run(context.Background(), args, env); got != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tc.wantCode, out, errb)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q does not contain %q", errb, tc.wantErr)
			}
			if tc.wantCode != 0 {
				return
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q does not contain %q", out, tc.wantOut)
			}
			var d struct {
				Allow    bool     `json:"allow"`
				Reasons  []string `json:"reasons"`
				ID       string   `json:"decision_id"`
				Revision string   `json:"policy_revision"`
			}
			if err := json.NewDecoder(strings.NewReader(out.String())).Decode(&d); err != nil {
				t.Fatalf("stdout is not a decision: %v\n%s", err, out)
			}
			if d.Allow != tc.wantAllow || strings.Join(d.Reasons, "|") != strings.Join(tc.wantReasons, "|") || d.ID == "" || d.Revision == "" {
				t.Errorf("decision %+v, want allow %v reasons %q", d, tc.wantAllow, tc.wantReasons)
			}
		})
	}
}

// TestPolicyEvalExplainNamesTheRule: --explain shows the deny override
// that fired, by file and line.
func TestPolicyEvalExplainNamesTheRule(t *testing.T) {
	env, out, errb := testEnv(nil)
	args := []string{"policy", "eval", "--policy", "policies", "--input", "policies/examples/admin-hits-deny-override.input", "--explain"}
	if code := run(context.Background(), args, env); code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	for _, want := range []string{
		`(?m)^  policies/deny\.rego:\d+: deny contains rule\.reason if \{$`,
		`(?m)^  policies/authz\.rego:\d+: granted if \{$`,
		`(?m)^  policies/authz\.rego:\d+: default allow := false$`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("explanation lacks %s:\n%s", want, out)
		}
	}
}
