package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDevTour runs `meshguard dev` as a newcomer would, then runs the curl
// commands its tour prints, exactly as printed: the allowed ones must answer
// 200, the denied one 403 with a decision ID that appears in the audit log.
// Ctrl-C (SIGINT) must stop everything and remove the temporary directory.
func TestDevTour(t *testing.T) {
	needBinary(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed; the tour's commands are curl commands")
	}
	base := freePorts(t, 33) // dev uses base..base+32
	started := time.Now()
	dev := start(t, "dev", nil, "dev", "--base-port", fmt.Sprint(base))
	var tour string
	eventually(t, 30*time.Second, "dev prints its tour", func() error {
		if dev.exited() {
			t.Fatalf("dev exited early: %v\n%s", dev.err, dev.stderr())
		}
		if tour = dev.stdout(); !strings.Contains(tour, "Press Ctrl-C") {
			return fmt.Errorf("no tour yet")
		}
		return nil
	})
	t.Logf("dev ready in %s", time.Since(started).Round(time.Millisecond))

	cmds := regexp.MustCompile(`(?m)^\s+(curl -s .*)$`).FindAllStringSubmatch(tour, -1)
	var tourCalls []string
	for _, c := range cmds {
		if !strings.Contains(c[1], "/status") {
			tourCalls = append(tourCalls, c[1])
		}
	}
	if len(tourCalls) != 4 {
		t.Fatalf("want 4 curl commands in the tour (3 allowed, 1 denied), got %d:\n%s", len(tourCalls), tour)
	}
	var decisionID string
	for i, line := range tourCalls {
		args := append(shellWords(t, strings.TrimPrefix(line, "curl ")), "-w", "\n%{http_code}")
		out, err := exec.Command(curl, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		trimmed := strings.TrimSpace(string(out))
		cut := strings.LastIndex(trimmed, "\n")
		body, code := trimmed[:max(cut, 0)], trimmed[cut+1:]
		want := "200"
		if i == 3 {
			want = "403"
		}
		if code != want {
			t.Fatalf("%s: status %s, want %s; body %s", line, code, want, body)
		}
		if want == "403" {
			var denied struct {
				Error      string `json:"error"`
				DecisionID string `json:"decision_id"`
			}
			if err := json.Unmarshal([]byte(body), &denied); err != nil || denied.Error != "forbidden" || denied.DecisionID == "" {
				t.Fatalf("403 body %q: want {\"error\":\"forbidden\",\"decision_id\":...} (%v)", body, err)
			}
			decisionID = denied.DecisionID
		}
	}
	audit := regexp.MustCompile(`\(the denial above is in (\S+)\)`).FindStringSubmatch(tour)
	if audit == nil {
		t.Fatalf("the tour does not name the audit log:\n%s", tour)
	}
	eventually(t, 10*time.Second, "the denial's decision ID is in the audit log", func() error {
		data, err := os.ReadFile(audit[1])
		if err != nil {
			return err
		}
		if len(lines(string(data), `"msg":"request denied"`, decisionID)) != 1 {
			return fmt.Errorf("decision %s not in %s:\n%s", decisionID, audit[1], data)
		}
		return nil
	})

	dir := regexp.MustCompile(`remove (\S+)\.\n`).FindStringSubmatch(tour)
	if dir == nil {
		t.Fatalf("the tour does not name its directory:\n%s", tour)
	}
	_ = dev.cmd.Process.Signal(os.Interrupt)
	select {
	case <-dev.done:
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not stop within 20s of Ctrl-C")
	}
	if dev.err != nil {
		t.Fatalf("dev exited with %v after Ctrl-C", dev.err)
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Fatalf("dev left %s behind (stat: %v)", dir[1], err)
	}
}

// shellWords splits a tour command line the way a shell would for the
// simple quoting the tour uses (single quotes, no escapes).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}
