package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				code, body, err := m.call(client, web, "GET", "users", "/users/7")
				sent.Add(1)
				if err != nil || code != 200 {
					failed.Add(1)
					mu.Lock()
					if len(failures) < 5 {
						failures = append(failures, fmt.Sprintf("%d %v %s", code, err, strings.TrimSpace(body)))
					}
					mu.Unlock()
				}
			}
		}()
	}
	before := sent.Load()
	eventually(t, 10*time.Second, "traffic flows", func() error {
		if sent.Load() < before+100 {
			return fmt.Errorf("%d requests", sent.Load()-before)
		}
		return nil
	})

	users2.proc.kill()
	killed := time.Now()
	afterKill := sent.Load()
	eventually(t, 20*time.Second, "traffic continues after the kill", func() error {
		if sent.Load() < afterKill+500 {
			return fmt.Errorf("%d requests since the kill", sent.Load()-afterKill)
		}
		return nil
	})
	eventually(t, 60*time.Second, "the killed agent's lease expires", func() error {
		if n := m.endpointCount(web, "users"); n != 1 {
			return fmt.Errorf("registry still has %d users endpoints", n)
		}
		return nil
	})
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d idempotent requests failed after killing one endpoint; first: %q", failed.Load(), sent.Load(), failures)
	}
	t.Logf("%d requests, 0 failed; the dead entry left the registry %s after the kill", sent.Load(), time.Since(killed).Round(time.Second))
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
