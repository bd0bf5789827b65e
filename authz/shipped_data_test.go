package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshguard/meshguard/authz"
)

// TestShippedTestsIgnoreOperatorData: the agent runs a revision's _test.rego
// files before swapping it in, so the shipped rules' tests must pass whatever
// data.json an operator writes. Otherwise configuring the allow-list (the
// documented way to use the shipped policy) would make every reload fail.
func TestShippedTestsIgnoreOperatorData(t *testing.T) {
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join("..", "policies", "*.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped policies: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	operator := `{"meshguard": {"allowlist": {"shop": {"web": [{"methods": ["GET"], "paths": ["/shop/**"]}]}}, "deny": []}}`
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(operator), 0o644); err != nil {
		t.Fatal(err)
	}
	results, err := authz.TestDir(context.Background(), dir)
	if err != nil {
		t.Fatalf("running the shipped tests with an operator's data.json: %v", err)
	}
	if len(results) == 0 {
		t.Fatal("no test results")
	}
	for _, r := range results {
		if !r.Pass && !r.Skip {
			t.Errorf("%s fails with an operator's data.json: %+v", r.Name, r)
		}
	}
}
