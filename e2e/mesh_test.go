package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// meshAgent is one agent process and its addresses.
type meshAgent struct {
	name, app, inbound, outbound, admin, dataDir, auditLog, socket string
	proc                                                           *proc
}

// mesh is a CA and a set of agents with demo apps, all real processes.
type mesh struct {
	t           *testing.T
	dir         string
	caDir       string
	caAddr      string
	fingerprint string
	policyDir   string
	ca          *proc
	agents      map[string]*meshAgent
}

// e2ePolicyData configures the shipped allow-list for these tests.
const e2ePolicyData = `{
  "meshguard": {
    "allowlist": {
      "users": {
        "web":     [{"methods": ["GET"], "paths": ["/users/*"]}],
        "billing": [{"methods": ["POST"], "paths": ["/users/*/charges"]}]
      },
      "billing": {
        "users":   [{"methods": ["GET"], "paths": ["/billing/*"]}]
      }
    },
    "deny": []
  }
}
`

// newMesh runs ca init and ca serve with the given extra serve flags.
func newMesh(t *testing.T, serveFlags ...string) *mesh {
	t.Helper()
	needBinary(t)
	dir := t.TempDir()
	m := &mesh{t: t, dir: dir, caDir: filepath.Join(dir, "ca"), caAddr: freeAddr(t), agents: map[string]*meshAgent{}}
	out, stderr, code := runCmd(t, nil, "ca", "init", "--dir", m.caDir, "--trust-domain", "example.org")
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, stderr)
	}
	m.fingerprint = strings.TrimSpace(out)
	m.policyDir = filepath.Join(dir, "policy")
	copyPolicies(t, m.policyDir)
	writeFile(t, filepath.Join(m.policyDir, "data.json"), e2ePolicyData)
	m.startCA(serveFlags...)
	return m
}

func (m *mesh) startCA(serveFlags ...string) {
	m.t.Helper()
	args := append([]string{"ca", "serve", "--dir", m.caDir, "--listen", m.caAddr}, serveFlags...)
	m.ca = start(m.t, "ca", nil, args...)
	eventually(m.t, 20*time.Second, "ca serve listens", func() error {
		if m.ca.exited() {
			m.t.Fatalf("ca serve exited: %v\n%s", m.ca.err, m.ca.stderr())
		}
		return dialOK(m.caAddr)
	})
}

// addAgent starts a demo app and its agent for service name.
func (m *mesh) addAgent(name, route string, extra ...string) *meshAgent {
	m.t.Helper()
	return m.addAgentService(name, name, route, extra...)
}

// addAgentService starts agent name (its own ports, data dir and demo app)
// serving service. With "edge" as the first extra argument it runs
// `meshguard edge` instead, and the rest of extra are its flags.
func (m *mesh) addAgentService(name, service, route string, extra ...string) *meshAgent {
	m.t.Helper()
	a := &meshAgent{
		name: name, app: freeAddr(m.t), inbound: freeAddr(m.t), outbound: freeAddr(m.t), admin: freeAddr(m.t),
		dataDir: filepath.Join(m.dir, name), auditLog: filepath.Join(m.dir, name+"-audit.log"),
		socket: filepath.Join(m.dir, name+".sock"),
	}
	// The app answers as the agent's name, so a test can tell instances apart.
	start(m.t, name+"-app", nil, "demo-app", "--name", name, "--listen", a.app)
	token, stderr, code := runCmd(m.t, nil, "token", "create", "--dir", m.caDir, "--spiffe-id", "spiffe://example.org/svc/"+service)
	if code != 0 {
		m.t.Fatalf("token create: exit %d: %s", code, stderr)
	}
	tokenFile := filepath.Join(m.dir, name+".token")
	writeFile(m.t, tokenFile, strings.TrimSpace(token))
	command := "agent"
	if len(extra) > 0 && extra[0] == "edge" {
		command, extra = "edge", extra[1:]
	}
	args := []string{command, "--ca", "https://" + m.caAddr, "--ca-fingerprint", m.fingerprint,
		"--token-file", tokenFile, "--service", service, "--app", a.app, "--route", route,
		"--inbound", a.inbound, "--advertise", a.inbound, "--outbound", a.outbound, "--admin", a.admin,
		"--data-dir", a.dataDir, "--policy", m.policyDir, "--audit-log", a.auditLog,
		"--workload-socket", a.socket}
	a.proc = start(m.t, name+"-agent", nil, append(args, extra...)...)
	m.agents[name] = a
	return a
}

// waitReady waits until every agent's /readyz answers 200.
func (m *mesh) waitReady() {
	m.t.Helper()
	for _, a := range m.agents {
		a := a
		eventually(m.t, 30*time.Second, a.name+" agent ready", func() error {
			if a.proc.exited() {
				m.t.Fatalf("agent %s exited: %v\n%s", a.name, a.proc.err, a.proc.stderr())
			}
			code, _, err := get(http.DefaultClient, "http://"+a.admin+"/readyz", "")
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("readyz %d", code)
			}
			return nil
		})
	}
}

// call sends method path to service through agent from's outbound port.
func (m *mesh) call(client *http.Client, from *meshAgent, method, service, path string) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+from.outbound+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = service
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// metric returns the sum of the samples of a Prometheus metric (with the
// given label filter, e.g. `result="error"`) on an agent's admin port.
func metric(t *testing.T, admin, name, labelFilter string) float64 {
	t.Helper()
	_, body, err := get(http.DefaultClient, "http://"+admin+"/metrics", "")
	if err != nil {
		return -1
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (labelFilter != "" && !strings.Contains(line, labelFilter)) {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// TestMeshLifecycle drives a whole mesh as an operator would: bootstrap with
// tokens, allowed and denied calls with audit lines, rotation under
// continuous traffic with zero failed requests, policy hot reload (good, then
// broken: the last good stays), the CA stopped while traffic continues, and a
// graceful agent shutdown.
func TestMeshLifecycle(t *testing.T) {
	m := newMesh(t, "--svid-ttl", "12s")
	web := m.addAgent("web", "/web")
	users := m.addAgent("users", "/users")
	billing := m.addAgent("billing", "/billing")
	m.waitReady()
	client := &http.Client{Timeout: 10 * time.Second}

	// Allowed and denied, with the audit line for the denial.
	eventually(t, 20*time.Second, "web reaches users", func() error {
		code, body, err := m.call(client, web, "GET", "users", "/users/42")
		if err != nil || code != 200 {
			return fmt.Errorf("status %d, %v: %s", code, err, body)
		}
		return nil
	})
	// billing learns of users through its own registry watch.
	eventually(t, 20*time.Second, "billing reaches users", func() error {
		code, body, err := m.call(client, billing, "POST", "users", "/users/42/charges")
		if err != nil || code != 200 {
			return fmt.Errorf("billing POST charges: %d %v %s", code, err, body)
		}
		return nil
	})
	code, body, err := m.call(client, web, "POST", "users", "/users/42/charges")
	if err != nil || code != 403 {
		t.Fatalf("web POST charges: got %d %v %s, want 403", code, err, body)
	}
	var denied struct {
		Error      string `json:"error"`
		DecisionID string `json:"decision_id"`
	}
	if err := json.Unmarshal([]byte(body), &denied); err != nil || denied.Error != "forbidden" || denied.DecisionID == "" {
		t.Fatalf("403 body %q (%v)", body, err)
	}
	eventually(t, 10*time.Second, "audit line for the denial", func() error {
		data, _ := os.ReadFile(users.auditLog)
		found := lines(string(data), denied.DecisionID)
		if len(found) != 1 {
			return fmt.Errorf("decision %s not in users' audit log:\n%s", denied.DecisionID, data)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(found[0]), &rec); err != nil {
			return err
		}
		want := map[string]any{"msg": "request denied", "source_id": "spiffe://example.org/svc/web",
			"destination_id": "spiffe://example.org/svc/users", "service": "users", "method": "POST",
			"path": "/users/42/charges", "dry_run": false}
		for k, v := range want {
			if rec[k] != v {
				return fmt.Errorf("audit %s = %v, want %v in %s", k, rec[k], v, found[0])
			}
		}
		for _, k := range []string{"time", "reasons", "policy_revision", "remote_addr"} {
			if _, ok := rec[k]; !ok {
				return fmt.Errorf("audit line lacks %s: %s", k, found[0])
			}
		}
		return nil
	})

	// Continuous traffic from here on: every request must succeed.
	tr := m.startTraffic(client, web, "users", "/users/7", 1)
	defer tr.stop()

	// Rotation: SVIDs live 12s, so both agents rotate during the traffic.
	for _, a := range []*meshAgent{web, users} {
		a := a
		eventually(t, 40*time.Second, a.name+" rotates its SVID", func() error {
			if v := metric(t, a.admin, "meshguard_svid_rotations_total", ""); v < 1 {
				return fmt.Errorf("meshguard_svid_rotations_total = %v", v)
			}
			return nil
		})
	}

	// Hot reload: grant web POST charges, then break the policy.
	writeFile(t, filepath.Join(m.policyDir, "data.json"), strings.Replace(e2ePolicyData,
		`"web":     [{"methods": ["GET"], "paths": ["/users/*"]}]`,
		`"web":     [{"methods": ["GET"], "paths": ["/users/*"]}, {"methods": ["POST"], "paths": ["/users/*/charges"]}]`, 1))
	eventually(t, 20*time.Second, "the new grant is live", func() error {
		code, body, err := m.call(client, web, "POST", "users", "/users/42/charges")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
	errorsBefore := metric(t, users.admin, "meshguard_policy_reloads_total", `result="error"`)
	writeFile(t, filepath.Join(m.policyDir, "broken.rego"), "package meshguard.authz\n\nallow if {\n")
	eventually(t, 20*time.Second, "the broken revision is refused", func() error {
		if v := metric(t, users.admin, "meshguard_policy_reloads_total", `result="error"`); v <= errorsBefore {
			return fmt.Errorf("reload errors %v, before %v", v, errorsBefore)
		}
		return nil
	})
	code, body, err = m.call(client, web, "POST", "users", "/users/42/charges")
	if err != nil || code != 200 {
		t.Fatalf("after a broken revision the last good policy must stay: %d %v %s", code, err, body)
	}
	os.Remove(filepath.Join(m.policyDir, "broken.rego"))

	// The CA stops: traffic between agents continues.
	if err := m.ca.stop(10 * time.Second); err != nil {
		t.Logf("ca serve exit: %v", err)
	}
	before := tr.sent.Load()
	eventually(t, 20*time.Second, "traffic continues without the CA", func() error {
		if tr.sent.Load() < before+50 {
			return fmt.Errorf("only %d requests since the CA stopped", tr.sent.Load()-before)
		}
		return nil
	})

	tr.stop()
	if tr.failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during rotation, reload and CA outage; first: %q", tr.failed.Load(), tr.sent.Load(), tr.firstFailures())
	}
	t.Logf("%d requests, 0 failed, across rotation, policy reload and CA outage", tr.sent.Load())

	// The CA comes back on the same address; the agents re-register.
	m.startCA("--svid-ttl", "12s")
	eventually(t, 30*time.Second, "billing is registered again", func() error {
		if !m.registered(web, "billing") {
			return fmt.Errorf("billing not in the registry")
		}
		return nil
	})

	// Graceful shutdown: SIGTERM deregisters first, well before the 30s
	// lease could expire, then the agent exits cleanly.
	stopped := time.Now()
	if err := billing.proc.stop(20 * time.Second); err != nil {
		t.Fatalf("billing agent did not exit cleanly on SIGTERM: %v", err)
	}
	if m.registered(web, "billing") {
		t.Fatal("billing is still registered after its agent stopped gracefully")
	}
	t.Logf("billing deregistered and exited %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
}

// registered reports whether service has an entry, as `meshguard registry
// list --json` sees it with agent a's SVID.
func (m *mesh) registered(a *meshAgent, service string) bool {
	m.t.Helper()
	for _, s := range m.services(a) {
		if s == service {
			return true
		}
	}
	return false
}

// services lists the service of every registry entry, as `meshguard
// registry list --json` sees it with agent a's SVID (nil if it fails).
func (m *mesh) services(a *meshAgent) []string {
	m.t.Helper()
	out, stderr, code := runCmd(m.t, nil, "registry", "list", "--ca", "https://"+m.caAddr, "--data-dir", a.dataDir, "--json")
	if code != 0 {
		m.t.Logf("registry list: exit %d: %s", code, stderr)
		return nil
	}
	var snap struct {
		Entries []struct {
			Service string `json:"service"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		m.t.Fatalf("registry list --json: %v: %s", err, out)
	}
	var names []string
	for _, e := range snap.Entries {
		names = append(names, e.Service)
	}
	return names
}

// traffic is GET requests sent without pause through one agent's outbound
// port by several goroutines, every answer counted.
type traffic struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	failures     []string // the first few
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

// startTraffic sends GET path to service through from with workers
// goroutines until stop.
func (m *mesh) startTraffic(client *http.Client, from *meshAgent, service, path string, workers int) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel}
	for w := 0; w < workers; w++ {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for ctx.Err() == nil {
				code, body, err := m.call(client, from, "GET", service, path)
				tr.sent.Add(1)
				if err != nil || code != 200 {
					tr.failed.Add(1)
					tr.mu.Lock()
					if len(tr.failures) < 5 {
						tr.failures = append(tr.failures, fmt.Sprintf("%d %v %s", code, err, strings.TrimSpace(body)))
					}
					tr.mu.Unlock()
				}
			}
		}()
	}
	return tr
}

// stop ends the traffic and waits for the senders; calling it again is a no-op.
func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

func (tr *traffic) firstFailures() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.failures...)
}

// get fetches url and returns status and body.
func get(client *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func dialOK(addr string) error {
	c, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr + "/")
	if err == nil {
		c.Body.Close()
	}
	// The CA speaks TLS: any answer (even an HTTP-to-HTTPS error) means it listens.
	if err != nil && strings.Contains(err.Error(), "connection refused") {
		return err
	}
	return nil
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// copyPolicies copies the shipped policy set (the .rego files) into dir.
func copyPolicies(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "policies", "*.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped policies found: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, filepath.Base(f)), string(data))
	}
}
