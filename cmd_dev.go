package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// devService is one demo workload of `meshguard dev` and its agent's ports.
type devService struct {
	Name     string
	Route    string
	App      string // demo app address
	Inbound  string
	Outbound string
	Admin    string
}

// devPolicy is the demo policy: web may read users, billing may charge them,
// users may read billing; everything else is denied. It is written to a
// temporary directory the tour points at, so it can be edited live.
const devPolicy = `package meshguard.authz

# meshguard dev's demo policy. Edit and save: the agents reload it, run the
# tests in policy_test.rego, and keep the last good revision if they fail.

default allow := false

allow if {
	input.source.service == "web"
	input.destination.service == "users"
	input.request.method == "GET"
	glob.match("/users/*", ["/"], input.request.path)
}

allow if {
	input.source.service == "billing"
	input.destination.service == "users"
	input.request.method == "POST"
	glob.match("/users/*/charges", ["/"], input.request.path)
}

allow if {
	input.source.service == "users"
	input.destination.service == "billing"
	input.request.method == "GET"
	glob.match("/billing/*", ["/"], input.request.path)
}

reasons contains msg if {
	not allow
	msg := sprintf("%s may not %s %s on %s", [input.source.service, input.request.method, input.request.path, input.destination.service])
}
`

const devPolicyTest = `package meshguard.authz_test

import data.meshguard.authz

test_web_reads_users if {
	authz.allow with input as {"source": {"service": "web"}, "destination": {"service": "users"}, "request": {"method": "GET", "path": "/users/42"}}
}

test_web_cannot_charge if {
	not authz.allow with input as {"source": {"service": "web"}, "destination": {"service": "users"}, "request": {"method": "POST", "path": "/users/42/charges"}}
}

test_users_reads_billing if {
	authz.allow with input as {"source": {"service": "users"}, "destination": {"service": "billing"}, "request": {"method": "GET", "path": "/billing/42"}}
}

test_billing_charges if {
	authz.allow with input as {"source": {"service": "billing"}, "destination": {"service": "users"}, "request": {"method": "POST", "path": "/users/42/charges"}}
}
`

var devTour = template.Must(template.New("tour").Parse(`
meshguard dev: a local mesh is running (trust domain {{.TrustDomain}}).

  CA + registry   https://{{.CA}}   (root fingerprint {{.Fingerprint}})
{{range .Services}}  {{printf "%-8s" .Name}}  app {{.App}}  agent: outbound {{.Outbound}}  inbound {{.Inbound}}  admin {{.Admin}}
{{end}}
Try it (each agent's outbound port is where its app sends requests):

  # web may read users: 200
  curl -s -H 'Host: users' http://{{.Web.Outbound}}/users/42

  # billing may charge users: 200
  curl -s -X POST -H 'Host: users' http://{{.Billing.Outbound}}/users/42/charges

  # users may read billing: 200
  curl -s -H 'Host: billing' http://{{.Users.Outbound}}/billing/42

  # web may not charge users: 403 with a decision ID
  curl -s -X POST -H 'Host: users' http://{{.Web.Outbound}}/users/42/charges

Audit logs (every denial, one JSON line): {{.Dir}}/<service>-audit.log
                                          (the denial above is in {{.AuditLog}})
Agent status:                             curl -s http://{{.Web.Admin}}/status
Edit the policy live:                     {{.PolicyFile}}
  (its tests, policy_test.rego beside it, run before every reload: a
   revision that fails them or does not compile is refused, the agents keep
   the last good one and say why in {{.Dir}}/<service>-agent.log)
Logs of every process:                    {{.Dir}}/*.log
{{if .Traffic}}
Sending a little traffic (allowed and denied) every second; watch the audit log.
{{end}}
Press Ctrl-C to stop everything and remove {{.Dir}}.
`))

// cmdDev runs a whole local mesh: a CA with the registry, three demo apps
// (web, users, billing) each behind its own agent, and a demo policy. Every
// part is a child process of this same binary, started as an operator would.
func cmdDev(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("dev", env)
	basePort := fs.Int("base-port", 17000, "first of the loopback ports the mesh uses (ports base..base+30)")
	traffic := fs.Bool("traffic", false, "keep sending a little allowed and denied traffic")
	keep := fs.Bool("keep", false, "keep the temporary directory on exit")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if *basePort < 1024 || *basePort > 65000 {
		return usagef("dev: --base-port %d out of range (1024..65000)", *basePort)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev: finding own binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "meshguard-dev-")
	if err != nil {
		return fmt.Errorf("dev: temp dir: %w", err)
	}
	m := &devMesh{env: env, self: self, dir: dir, td: "example.org", base: *basePort}
	defer func() {
		m.stopAll()
		if !*keep {
			os.RemoveAll(dir)
		}
	}()
	if err := m.start(ctx); err != nil {
		return err
	}
	tour := map[string]any{
		"TrustDomain": m.td, "CA": m.caAddr, "Fingerprint": m.fingerprint,
		"Services": m.services, "Web": m.services[0], "Users": m.services[1], "Billing": m.services[2],
		"AuditLog":   filepath.Join(dir, "users-audit.log"),
		"PolicyFile": filepath.Join(dir, "policy", "policy.rego"),
		"Dir":        dir, "Traffic": *traffic,
	}
	if err := devTour.Execute(env.stdout, tour); err != nil {
		return fmt.Errorf("dev: printing the tour: %w", err)
	}
	if *traffic {
		go m.sendTraffic(ctx)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(env.stdout, "\nmeshguard dev: stopping")
		return nil
	case err := <-m.died:
		return fmt.Errorf("dev: %w", err)
	}
}

// devMesh is the set of child processes of one `meshguard dev`.
type devMesh struct {
	env         *runEnv
	self, dir   string
	td          string
	base        int
	caAddr      string
	fingerprint string
	services    []devService

	mu    sync.Mutex
	procs []*exec.Cmd
	died  chan error
}

func (m *devMesh) port(offset int) string { return fmt.Sprintf("127.0.0.1:%d", m.base+offset) }

func (m *devMesh) start(ctx context.Context) error {
	m.died = make(chan error, 16)
	m.caAddr = m.port(0)
	for i, s := range []struct{ name, route string }{{"web", "/web"}, {"users", "/users"}, {"billing", "/billing"}} {
		m.services = append(m.services, devService{
			Name: s.name, Route: s.route,
			App: m.port(10 + i), Inbound: m.port(20 + i), Outbound: m.port(1 + i), Admin: m.port(30 + i),
		})
	}
	policyDir := filepath.Join(m.dir, "policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	for name, body := range map[string]string{"policy.rego": devPolicy, "policy_test.rego": devPolicyTest} {
		if err := os.WriteFile(filepath.Join(policyDir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("dev: writing the demo policy: %w", err)
		}
	}
	caDir := filepath.Join(m.dir, "ca")
	out, err := m.runOnce(ctx, "ca", "init", "--dir", caDir, "--trust-domain", m.td)
	if err != nil {
		return err
	}
	m.fingerprint = strings.TrimSpace(lastLine(out))
	if err := m.spawn("ca", "ca", "serve", "--dir", caDir, "--listen", m.caAddr); err != nil {
		return err
	}
	for _, s := range m.services {
		if err := m.spawn(s.Name+"-app", "demo-app", "--name", s.Name, "--listen", s.App); err != nil {
			return err
		}
	}
	var peers []string
	for _, s := range m.services {
		peers = append(peers, "--peer", fmt.Sprintf("%s=spiffe://%s/svc/%s@%s", s.Name, m.td, s.Name, s.Inbound))
	}
	caClient, err := rootClient(caDir)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := waitHTTP(ctx, caClient, "https://"+m.caAddr+"/health", 15*time.Second); err != nil {
		return fmt.Errorf("dev: the CA did not come up (see %s): %w", filepath.Join(m.dir, "ca.log"), err)
	}
	for _, s := range m.services {
		tokenFile := filepath.Join(m.dir, s.Name+".token")
		token, err := m.runOnce(ctx, "token", "create", "--dir", caDir, "--spiffe-id", fmt.Sprintf("spiffe://%s/svc/%s", m.td, s.Name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(tokenFile, []byte(strings.TrimSpace(lastLine(token))), 0o600); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		args := []string{"agent",
			"--ca", "https://" + m.caAddr, "--ca-fingerprint", m.fingerprint, "--token-file", tokenFile,
			"--service", s.Name, "--app", s.App, "--route", s.Route,
			"--inbound", s.Inbound, "--advertise", s.Inbound, "--outbound", s.Outbound, "--admin", s.Admin,
			"--data-dir", filepath.Join(m.dir, s.Name), "--policy", policyDir,
			"--audit-log", filepath.Join(m.dir, s.Name+"-audit.log"),
			"--workload-socket", filepath.Join(m.dir, s.Name+".sock"),
		}
		args = append(args, peers...)
		if err := m.spawn(s.Name+"-agent", args...); err != nil {
			return err
		}
	}
	for _, s := range m.services {
		if err := waitHTTP(ctx, &http.Client{Timeout: time.Second}, "http://"+s.Admin+"/readyz", 15*time.Second); err != nil {
			return fmt.Errorf("dev: agent %s did not become ready (see %s): %w", s.Name, filepath.Join(m.dir, s.Name+"-agent.log"), err)
		}
	}
	return nil
}

// runOnce runs a short-lived subcommand and returns its stdout.
func (m *devMesh) runOnce(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, m.self, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dev: meshguard %s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// spawn starts a long-running child whose output goes to DIR/NAME.log.
func (m *devMesh) spawn(name string, args ...string) error {
	logFile, err := os.Create(filepath.Join(m.dir, name+".log"))
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	cmd := exec.Command(m.self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: Ctrl-C reaches dev, which stops the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("dev: starting %s: %w", name, err)
	}
	m.mu.Lock()
	m.procs = append(m.procs, cmd)
	m.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logFile.Close()
		select {
		case m.died <- fmt.Errorf("%s exited (%v); its log: %s", name, err, filepath.Join(m.dir, name+".log")):
		default:
		}
	}()
	return nil
}

// stopAll stops the children in reverse start order: agents first (so they
// deregister while the CA is still up), then apps, then the CA.
func (m *devMesh) stopAll() {
	m.mu.Lock()
	procs := append([]*exec.Cmd(nil), m.procs...)
	m.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.Process == nil || p.ProcessState != nil {
			continue
		}
		_ = p.Process.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && p.Process.Signal(syscall.Signal(0)) == nil {
			time.Sleep(20 * time.Millisecond) // polling a child's exit, with a deadline
		}
		_ = p.Process.Kill()
	}
}

// sendTraffic sends one allowed and one denied request per second per route
// until ctx is done.
func (m *devMesh) sendTraffic(ctx context.Context) {
	client := &http.Client{Timeout: 5 * time.Second}
	web, billing := m.services[0], m.services[2]
	calls := []struct {
		from         devService
		method, path string
	}{
		{web, http.MethodGet, "/users/42"},
		{billing, http.MethodPost, "/users/42/charges"},
		{web, http.MethodPost, "/users/42/charges"}, // denied
		{web, http.MethodDelete, "/users/42"},       // denied
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, c := range calls {
			req, _ := http.NewRequestWithContext(ctx, c.method, "http://"+c.from.Outbound+c.path, nil)
			req.Host = "users"
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				fmt.Fprintf(m.env.stdout, "%-8s -> users  %-6s %-22s %d\n", c.from.Name, c.method, c.path, resp.StatusCode)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// waitHTTP polls url until it answers 200 or the deadline passes.
func waitHTTP(ctx context.Context, client *http.Client, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error = errors.New("no answer")
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond) // polling a child's readiness, with a deadline
	}
	return last
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// rootClient is an HTTPS client that trusts only the root in caDir.
func rootClient(caDir string) (*http.Client, error) {
	pemBytes, err := os.ReadFile(filepath.Join(caDir, "root.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the CA root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, errors.New("the CA root is not PEM")
	}
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}
