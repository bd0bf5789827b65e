package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestKilledAgentFailover kills (SIGKILL, no deregistration) one of two
// agents serving "users" while web sends idempotent requests without pause:
// no request fails (connection failures are retried on the other endpoint,
// and the dead one is ejected), and the dead agent's registry entry is gone
// once its lease (30s) expires.
func TestKilledAgentFailover(t *testing.T) {
	m := newMesh(t)
	web := m.addAgent("web", "/web")
	m.addAgent("users", "/users")
	users2 := m.addAgentService("users-2", "users", "/users")
	m.waitReady()
	client := &http.Client{Timeout: 10 * time.Second}

	// Both endpoints are in web's table and both answer.

	eventually(t, 30*time.Second, "web reaches both users endpoints", func() error {
		if n := m.endpointCount(web, "users"); n != 2 {
			return fmt.Errorf("registry has %d users endpoints", n)
		}
		code, body, err := m.call(client, web, "GET", "users", "/users/1")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v %s", code, err, body)
		}

		return nil
	})

	tr := m.startTraffic(client, web, "users", "/users/7", 4)
	defer tr.stop()
	before := tr.sent.Load()
	eventually(t, 10*time.Second, "traffic flows", func() error {
		if tr.sent.Load() < before+100 {
			return fmt.Errorf("%d requests", tr.sent.Load()-before)
		}
		return nil
	})

	users2.proc.kill()
	killed := time.Now()
	afterKill := tr.sent.Load()
	eventually(t, 20*time.Second, "traffic continues after the kill", func() error {
		if tr.sent.Load() < afterKill+500 {
			return fmt.Errorf("%d requests since the kill", tr.sent.Load()-afterKill)
		}
		return nil
	})
	eventually(t, 60*time.Second, "the killed agent's lease expires", func() error {
		if n := m.endpointCount(web, "users"); n != 1 {
			return fmt.Errorf("registry still has %d users endpoints", n)
		}
		return nil
	})
	tr.stop()
	if tr.failed.Load() != 0 {
		t.Fatalf("%d of %d idempotent requests failed after killing one endpoint; first: %q", tr.failed.Load(), tr.sent.Load(), tr.firstFailures())
	}
	t.Logf("%d requests, 0 failed; the dead entry left the registry %s after the kill", tr.sent.Load(), time.Since(killed).Round(time.Second))

	// The CA stops, then web restarts: with no registry to ask, it routes
	// from the snapshot it persisted in its data dir (and its SVID from
	// there too: the join token is spent).
	if err := m.ca.stop(10 * time.Second); err != nil {
		t.Logf("ca serve exit: %v", err)
	}
	if err := web.proc.stop(20 * time.Second); err != nil {
		t.Fatalf("web agent did not stop cleanly: %v", err)
	}
	web.proc = start(t, "web-agent-restarted", nil, web.proc.cmd.Args[1:]...)
	eventually(t, 30*time.Second, "the restarted web routes to users without the CA", func() error {
		if web.proc.exited() {
			t.Fatalf("restarted web agent exited: %v\n%s", web.proc.err, web.proc.stderr())
		}
		code, body, err := m.call(client, web, "GET", "users", "/users/1")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
}

// endpointCount is the number of registry entries of service.
func (m *mesh) endpointCount(a *meshAgent, service string) int {
	m.t.Helper()
	n := 0
	for _, s := range m.services(a) {
		if s == service {
			n++
		}
	}
	return n
}
