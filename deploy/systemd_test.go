package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemdAnalyze finds systemd-analyze. When it is missing and this is a
// Debian machine where we are root (as CI is), it installs systemd; otherwise
// the caller skips with a message.
func systemdAnalyze(t *testing.T) string {
	if p, err := exec.LookPath("systemd-analyze"); err == nil {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		t.Skip("systemd-analyze is not installed and cannot be installed here (needs root and apt-get); units not verified")
	}
	t.Log("installing systemd to get systemd-analyze")
	install := exec.Command("sh", "-c", "apt-get install -y -qq systemd >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq systemd)")
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("could not install systemd (%v): %s", err, out)
	}
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd installed but systemd-analyze not found")
	}
	return p
}

// TestSystemdUnitsVerify runs systemd-analyze verify on the units. It exits 0
// even for unknown keys and unparseable values, so any diagnostic that names
// our unit files fails the test.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	dir := t.TempDir()
	for _, name := range []string{"meshguard-ca.service", "meshguard-agent@.service"} {
		raw, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart exists; point it at a binary that does.
		unit := strings.ReplaceAll(string(raw), "/usr/local/bin/meshguard", "/bin/true")
		if name == "meshguard-agent@.service" {
			name = "meshguard-agent@users.service"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no", "meshguard-ca.service", "meshguard-agent@users.service")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "meshguard-") {
			t.Errorf("systemd-analyze: %s", sc.Text())
		}
	}
}

// TestSystemdUnitsHardened checks the hardening directives the docs promise.
func TestSystemdUnitsHardened(t *testing.T) {
	want := []string{
		"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service",
		"StateDirectory=", "EnvironmentFile=", "UMask=0077",
	}
	for _, name := range []string{"meshguard-ca.service", "meshguard-agent@.service"} {
		raw, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(raw), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, w := range want {
			found := false
			for l := range lines {
				if strings.HasPrefix(l, w) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s lacks %s", name, w)
			}
		}
	}
}
