package main

import (
	"os/exec"
	"testing"
)

// TestDeployModule runs the tests of the deploy/ module (Kubernetes manifests
// strictly decoded into k8s.io/api types, systemd units verified, compose file
// checked). deploy/ is a module of its own so the meshguard binary never links
// the Kubernetes API; `go test ./...` does not enter nested modules, so this
// test does, keeping the README's one test command complete.
func TestDeployModule(t *testing.T) {
	if testing.Short() {
		t.Skip("deploy module tests skipped in -short mode")
	}
	// go test puts GOROOT/bin first on PATH, so this is the go running us.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("finding the go command: %v", err)
	}
	cmd := exec.Command(goBin, "test", "-count=1", "./...")
	cmd.Dir = "deploy"
	out, err := cmd.CombinedOutput()
	t.Logf("deploy module:\n%s", out)
	if err != nil {
		t.Fatalf("deploy module tests failed: %v", err)
	}
}
