package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestCanarySplit publishes two versions of "users" with --version and
// --weight (v1 90, v2 10) and checks that web's traffic splits by weight.
// The bounds are wide (the expected v2 count is 100 of 1000, standard
// deviation about 9.5): the test fails on a missing split, not on noise.
func TestCanarySplit(t *testing.T) {
	m := newMesh(t)
	web := m.addAgent("web", "/web")
	m.addAgentService("users-v1", "users", "/users", "--version", "v1", "--weight", "90")
	m.addAgentService("users-v2", "users", "/users", "--version", "v2", "--weight", "10")
	m.waitReady()
	eventually(t, 30*time.Second, "web sees both versions", func() error {
		if n := m.endpointCount(web, "users"); n != 2 {
			return fmt.Errorf("%d users endpoints", n)
		}
		return nil
	})
	client := &http.Client{Timeout: 10 * time.Second}
	// The registry watch may lag the list above by a moment: wait until v2
	// has answered once before counting.
	eventually(t, 20*time.Second, "v2 answers", func() error {
		for i := 0; i < 50; i++ {
			if who := answeredBy(t, m, client, web); who == "users-v2" {
				return nil
			}
		}
		return fmt.Errorf("no answer from users-v2 in 50 requests")
	})
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		counts[answeredBy(t, m, client, web)]++
	}
	t.Logf("1000 requests: %v", counts)
	if counts["users-v1"]+counts["users-v2"] != 1000 {
		t.Fatalf("answers from unexpected instances: %v", counts)
	}
	if v2 := counts["users-v2"]; v2 < 40 || v2 > 180 {
		t.Fatalf("users-v2 (weight 10 of 100) answered %d of 1000, want about 100", v2)
	}
}

func answeredBy(t *testing.T, m *mesh, client *http.Client, from *meshAgent) string {
	t.Helper()
	code, body, err := m.call(client, from, "GET", "users", "/users/1")
	if err != nil || code != 200 {
		t.Fatalf("GET users: %d %v %s", code, err, body)
	}
	var reply struct {
		Service string `json:"service"`
	}
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	return reply.Service
}
