package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshguard/meshguard/identity"
	"github.com/meshguard/meshguard/identity/workload"
	"github.com/meshguard/meshguard/internal/admin"
	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/proxy"
	"github.com/meshguard/meshguard/registry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"
)

// agentConfig is every agent flag of DESIGN.md's CLI, validated. The
// identity, Workload API and admin parts use it now; the data-plane fields
// (app, routes, peers, policy, listeners, timeouts, audit) are parsed and
// checked here so that bad values already exit 2, and are wired to the
// proxy, authz and registry parts when those land.
type agentConfig struct {
	// Identity from the meshguard CA ...
	caURL         string
	caFingerprint string // normalised lowercase hex
	token         string // from --token or --token-file
	tokenFile     string
	service       string
	dataDir       string
	svidTTL       time.Duration
	// ... or from an existing SPIFFE Workload API.
	spiffeSocket string

	// The Workload API served to the local workload.
	workloadSocket string
	workloadUID    int

	admin string

	// Data plane.
	app              string
	inbound          string
	advertise        string
	outbound         string
	routes           []string
	version          string           // canary: published as the "version" label
	weight           int              // canary: share of the service's traffic (1..1000; 0 = registry default)
	peers            []proxy.Endpoint // --peer SERVICE=SPIFFE_ID@HOST:PORT
	policyDir        string
	dryRun           bool
	auditLog         string
	auditAllowed     float64 // fraction of allowed requests also audited, 0..1
	decisionCache    int
	decisionCacheTTL time.Duration
	policyTimeout    time.Duration
	requestTimeout   time.Duration
	appProtocol      string // proxy.AppHTTP1 or proxy.AppH2C
	maxHeaderBytes   int
	// cpus is the Go scheduler's processor count (GOMAXPROCS) to set; 0
	// leaves the runtime's (all CPUs, or the GOMAXPROCS variable).
	cpus int
	// gcHeadroomMiB is the most the heap may grow between two collections
	// under load (internal/gcpace); 0 leaves Go's pacing alone, as does a
	// GOGC variable.
	gcHeadroomMiB int
}

// maxSocketPath is the longest unix socket path the kernel accepts.
const maxSocketPath = 107

// parseAgentConfig turns flags and MESHGUARD_* variables into a checked
// config; every problem is a usage error (exit 2) that says what to fix.
//
// extraFlags let a command built on the agent (edge) add its own flags to
// the same flag set.
func parseAgentConfig(name string, env *runEnv, args []string, extraFlags ...func(*flag.FlagSet)) (*agentConfig, error) {
	fs := newFlagSet(name, env)
	c := &agentConfig{}
	var routes, peers stringList
	fs.StringVar(&c.caURL, "ca", "", "meshguard CA URL, https://HOST:PORT")
	fs.StringVar(&c.caFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the CA root (printed by `meshguard ca init`)")
	fs.StringVar(&c.token, "token", "", "single-use join token (`meshguard token create`); not needed while --data-dir holds a valid SVID")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the join token")
	fs.StringVar(&c.service, "service", "", "this workload's service name; its SPIFFE ID is spiffe://TD/svc/NAME")
	fs.StringVar(&c.dataDir, "data-dir", "", "directory for the SVID, key, bundle and registry snapshot (0700); empty keeps them in memory")
	fs.DurationVar(&c.svidTTL, "svid-ttl", 0, "SVID lifetime to ask the CA for at bootstrap (0: the CA's default)")
	fs.StringVar(&c.spiffeSocket, "spiffe-socket", "", "take the SVID from this SPIFFE Workload API instead of the CA, e.g. unix:///run/spire/agent.sock")
	fs.StringVar(&c.workloadSocket, "workload-socket", "", "serve the SPIFFE Workload API to the local workload on this unix socket path")
	fs.IntVar(&c.workloadUID, "workload-uid", os.Getuid(), "the only uid allowed to call the Workload API socket")
	fs.StringVar(&c.admin, "admin", "127.0.0.1:15000", "admin listener: /healthz /readyz /metrics /status /debug/pprof/")
	fs.StringVar(&c.app, "app", "127.0.0.1:8080", "where inbound forwards allowed requests")
	fs.StringVar(&c.inbound, "inbound", "0.0.0.0:15443", "mTLS listener for peers")
	fs.StringVar(&c.advertise, "advertise", "", "HOST:PORT peers dial for the inbound listener (default: derived from --inbound)")
	fs.StringVar(&c.outbound, "outbound", "127.0.0.1:15001", "plaintext listener for the local workload's outgoing calls")
	fs.Var(&routes, "route", "route prefix this service owns (repeatable)")
	fs.StringVar(&c.version, "version", "", "version label published in the registry (canary splits, e.g. v2)")
	fs.IntVar(&c.weight, "weight", 0, "relative share of the service's traffic for this version, 1..1000 (default: the registry's, 100)")
	fs.Var(&peers, "peer", "static peer SERVICE=SPIFFE_ID@HOST:PORT (repeatable)")
	fs.StringVar(&c.policyDir, "policy", "", "directory of .rego policies (package meshguard.authz)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "compute and audit decisions but allow every request")
	fs.StringVar(&c.auditLog, "audit-log", "", "audit log file (default: stderr)")
	fs.Float64Var(&c.auditAllowed, "audit-allowed", 0, "fraction of allowed requests also written to the audit log, 0..1 (denials are always written)")
	fs.IntVar(&c.decisionCache, "decision-cache", 10000, "decision cache entries (0 disables it)")
	fs.DurationVar(&c.decisionCacheTTL, "decision-cache-ttl", 10*time.Second, "how long a cached decision lives")
	fs.DurationVar(&c.policyTimeout, "policy-timeout", 100*time.Millisecond, "deadline for one policy evaluation")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 15*time.Second, "per-request timeout")
	fs.StringVar(&c.appProtocol, "app-protocol", proxy.AppHTTP1, "how inbound talks to --app: http1 (keep-alive pool) or h2c (for gRPC apps)")
	fs.IntVar(&c.maxHeaderBytes, "max-header-bytes", proxy.DefaultMaxHeaderBytes, "largest request header block accepted on inbound and outbound (431 beyond)")
	defaultCPUs := 0
	if name == "agent" {
		defaultCPUs = min(2, runtime.NumCPU())
	}
	fs.IntVar(&c.cpus, "cpus", defaultCPUs, "processors the agent's Go scheduler runs on (GOMAXPROCS); 0: all. A sidecar defaults to 2 (as Istio's sidecar concurrency): it should not compete with its app for every CPU; 1 costs less CPU per request at low load but lets one slow syscall stall the agent for milliseconds")
	fs.IntVar(&c.gcHeadroomMiB, "gc-headroom", 64, "how far (MiB) the heap may grow above what is live between two Go garbage collections: under load the agent paces them about 10 s apart, up to this much growth (with a few MiB live, Go's default runs one every few MiB allocated: 15-25 a second at full load, each a latency blip); idle, Go's default pacing applies. 0 turns it off, as does a GOGC variable; GOMEMLIMIT still caps the heap")
	for _, add := range extraFlags {
		add(fs)
	}
	if err := parseFlags(fs, args, env, 0); err != nil {
		return nil, err
	}
	c.routes, c.peers = routes, nil
	n := fs.Name()
	if c.cpus < 0 || c.cpus > 1024 {
		return nil, usagef("%s: --cpus %d out of range (0..1024; 0 uses all)", n, c.cpus)
	}
	if !flagGiven(fs, "cpus") && env.getenv("GOMAXPROCS") != "" {
		c.cpus = 0 // the runtime already follows GOMAXPROCS
	}
	if c.gcHeadroomMiB < 0 || c.gcHeadroomMiB > 1<<20 {
		return nil, usagef("%s: --gc-headroom %d out of range (0..1048576 MiB; 0 turns it off)", n, c.gcHeadroomMiB)
	}
	if !flagGiven(fs, "gc-headroom") && env.getenv("GOGC") != "" {
		c.gcHeadroomMiB = 0 // the runtime already follows GOGC
	}
	if c.decisionCacheTTL <= 0 {
		return nil, usagef("%s: --decision-cache-ttl %s: want a positive duration", n, c.decisionCacheTTL)
	}
	if c.appProtocol != proxy.AppHTTP1 && c.appProtocol != proxy.AppH2C {
		return nil, usagef("%s: --app-protocol %q: want %s or %s", n, c.appProtocol, proxy.AppHTTP1, proxy.AppH2C)
	}
	if c.maxHeaderBytes < 4<<10 || c.maxHeaderBytes > 1<<20 {
		return nil, usagef("%s: --max-header-bytes %d out of range (4096..1048576)", n, c.maxHeaderBytes)
	}
	if !(c.auditAllowed >= 0 && c.auditAllowed <= 1) { // also refuses NaN
		return nil, usagef("%s: --audit-allowed %v: want a fraction from 0 to 1, e.g. 0.01", n, c.auditAllowed)
	}
	if c.weight < 0 || c.weight > 1000 {
		return nil, usagef("%s: --weight %d out of range (1..1000)", n, c.weight)
	}
	if c.version != "" && !validLabel(c.version) {
		return nil, usagef("%s: --version %q: use 1 to 63 letters, digits, '.', '_' or '-'", n, c.version)
	}

	// Identity source: exactly one of the CA or an existing Workload API.
	if c.spiffeSocket != "" {
		for _, f := range []struct{ flag, val string }{{"ca", c.caURL}, {"ca-fingerprint", c.caFingerprint}, {"token", c.token}, {"token-file", c.tokenFile}} {
			if f.val != "" {
				return nil, usagef("%s: --spiffe-socket and --%s are exclusive: take the identity from a Workload API or from the meshguard CA, not both", n, f.flag)
			}
		}
		if c.svidTTL != 0 {
			return nil, usagef("%s: --svid-ttl applies to the meshguard CA only; the Workload API at --spiffe-socket decides the SVID lifetime", n)
		}
		if err := workloadapi.ValidateAddress(c.spiffeSocket); err != nil {
			return nil, usagef("%s: --spiffe-socket %q: %v (want unix:///path or tcp://host:port)", n, c.spiffeSocket, err)
		}
	} else {
		if c.caURL == "" {
			return nil, usagef("%s: --ca is required (the meshguard CA, https://HOST:PORT), or --spiffe-socket to use an existing Workload API", n)
		}
		if u, err := url.Parse(c.caURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, usagef("%s: --ca %q: want https://HOST:PORT", n, c.caURL)
		}
		if err := requireFlag(fs, "ca-fingerprint", c.caFingerprint); err != nil {
			return nil, err
		}
		fp, err := identity.ParseFingerprint(c.caFingerprint)
		if err != nil {
			return nil, usagef("%s: --ca-fingerprint: %v", n, err)
		}
		c.caFingerprint = fp
		if c.token != "" && c.tokenFile != "" {
			return nil, usagef("%s: give --token or --token-file, not both", n)
		}
		if c.tokenFile != "" {
			b, err := os.ReadFile(c.tokenFile)
			if err != nil {
				return nil, usagef("%s: --token-file: %v", n, err)
			}
			c.token = strings.TrimSpace(string(b))
			if c.token == "" {
				return nil, usagef("%s: --token-file %s is empty", n, c.tokenFile)
			}
		}
		if strings.ContainsAny(c.token, " \t\r\n") {
			return nil, usagef("%s: the join token contains whitespace; pass it exactly as `meshguard token create` printed it", n)
		}
		if c.token == "" && c.dataDir == "" {
			return nil, usagef("%s: --token or --token-file is required (or a --data-dir holding a valid SVID from an earlier run)", n)
		}
		if c.svidTTL < 0 {
			return nil, usagef("%s: --svid-ttl %s is negative", n, c.svidTTL)
		}
	}
	if err := requireFlag(fs, "service", c.service); err != nil {
		return nil, err
	}
	if err := spiffeid.ValidatePathSegment(c.service); err != nil {
		return nil, usagef("%s: --service %q: must be one SPIFFE ID path segment (letters, digits, '.', '-', '_'; not '.' or '..')", n, c.service)
	}

	if c.workloadSocket != "" {
		if len(c.workloadSocket) > maxSocketPath {
			return nil, usagef("%s: --workload-socket path is %d bytes; unix sockets allow at most %d", n, len(c.workloadSocket), maxSocketPath)
		}
		if fi, err := os.Stat(dirOf(c.workloadSocket)); err != nil || !fi.IsDir() {
			return nil, usagef("%s: --workload-socket %s: directory %s does not exist", n, c.workloadSocket, dirOf(c.workloadSocket))
		}
	}
	if c.workloadUID < 0 {
		return nil, usagef("%s: --workload-uid %d: want a uid >= 0", n, c.workloadUID)
	}

	for _, a := range []struct{ flag, val string }{{"admin", c.admin}, {"app", c.app}, {"inbound", c.inbound}, {"outbound", c.outbound}} {
		if err := checkHostPort(a.val, true); err != nil {
			return nil, usagef("%s: --%s %q: %v", n, a.flag, a.val, err)
		}
	}
	if c.advertise != "" {
		if err := checkHostPort(c.advertise, false); err != nil {
			return nil, usagef("%s: --advertise %q: %v", n, c.advertise, err)
		}
		if host, _, _ := net.SplitHostPort(c.advertise); host == "" || net.ParseIP(host).IsUnspecified() {
			return nil, usagef("%s: --advertise %q: peers need a host they can dial, not an unspecified address", n, c.advertise)
		}
	}
	for _, r := range c.routes {
		// The registry's own rule, so an agent never starts with a route
		// the registry would refuse.
		if err := registry.ValidateRoute(r); err != nil {
			return nil, usagef("%s: --route %q: %v", n, r, err)
		}
	}
	for _, p := range peers {
		sp, err := proxy.ParsePeer(p)
		if err != nil {
			return nil, usagef("%s: --peer %q: %v (want SERVICE=SPIFFE_ID@HOST:PORT)", n, p, err)
		}
		c.peers = append(c.peers, sp)
	}
	if c.policyDir != "" {
		if fi, err := os.Stat(c.policyDir); err != nil || !fi.IsDir() {
			return nil, usagef("%s: --policy %s: not a readable directory", n, c.policyDir)
		}
	}
	if c.decisionCache < 0 {
		return nil, usagef("%s: --decision-cache %d: want 0 (off) or a positive size", n, c.decisionCache)
	}
	if c.policyTimeout <= 0 {
		return nil, usagef("%s: --policy-timeout %s: want a positive duration, e.g. 100ms", n, c.policyTimeout)
	}
	if c.requestTimeout <= 0 {
		return nil, usagef("%s: --request-timeout %s: want a positive duration, e.g. 15s", n, c.requestTimeout)
	}
	return c, nil
}

func dirOf(path string) string {
	if i := strings.LastIndex(path, "/"); i > 0 {
		return path[:i]
	} else if i == 0 {
		return "/"
	}
	return "."
}

// checkHostPort validates a listen or dial address.
func checkHostPort(addr string, allowZeroPort bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want HOST:PORT")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !allowZeroPort) {
		return fmt.Errorf("port %q is not a valid port number", port)
	}
	return nil
}

// agentIdentity is what the agent needs from an identity source; both
// identity.CASource and identity.WorkloadAPISource satisfy it.
type agentIdentity interface {
	x509svid.Source
	x509bundle.Source
	Changed() <-chan struct{}
	Ready() error
	Status() identity.Status
	Bootstrap(ctx context.Context) error
	Run(ctx context.Context) error
}

// newAgentIdentity builds the configured identity source.
func newAgentIdentity(c *agentConfig, log *slog.Logger, reg prometheus.Registerer) (agentIdentity, error) {
	if c.spiffeSocket != "" {
		return identity.NewWorkloadAPISource(identity.WorkloadAPIConfig{Addr: c.spiffeSocket, Logger: log, Registerer: reg})
	}
	return identity.NewCASource(identity.CAConfig{
		URL: c.caURL, Fingerprint: c.caFingerprint, Token: c.token, Service: c.service,
		DataDir: c.dataDir, TTL: c.svidTTL, Logger: log, Registerer: reg,
	})
}

// agentStatus is the /status document. Parts added later (policy, peers,
// routes) add fields here; `meshguard status` prints unknown ones as JSON.
type agentStatus struct {
	Version     string           `json:"version"`
	Ready       bool             `json:"ready"`
	NotReady    string           `json:"not_ready,omitempty"`
	Identity    identity.Status  `json:"identity"`
	WorkloadAPI string           `json:"workload_api,omitempty"`
	DataPlane   *dataPlaneStatus `json:"data_plane,omitempty"`
}

func cmdAgent(ctx context.Context, env *runEnv, args []string) error {
	cfg, err := parseAgentConfig("agent", env, args)
	if err != nil {
		return err
	}
	return runAgent(ctx, env, cfg, nil)
}

// agentPart is something a command built on the agent runs beside it (the
// edge's public listener): built once the data plane exists, run once the
// agent has its identity.
type agentPart interface {
	Run(ctx context.Context) error
}

// runAgent runs an agent with cfg; extra, if not nil, builds one more part
// from the data plane (its listeners are bound, so a bad address still
// fails at start).
func runAgent(ctx context.Context, env *runEnv, cfg *agentConfig, extra func(*dataPlane, prometheus.Registerer) (agentPart, error)) error {
	if cfg.cpus > 0 && env.setProcs != nil {
		env.setProcs(cfg.cpus)
	}
	if cfg.gcHeadroomMiB > 0 && env.gcPace != nil {
		env.gcPace(ctx, uint64(cfg.gcHeadroomMiB)<<20)
	}
	log := env.logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	src, err := newAgentIdentity(cfg, log, reg)
	if err != nil {
		return usagef("agent: %v", err)
	}
	if fi, err := os.Stat(cfg.tokenFile); cfg.tokenFile != "" && err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the join token file is readable by other users; keep it 0600 (the token is single use, but until used it is a credential)", logkey.Path, cfg.tokenFile)
	}
	if cfg.spiffeSocket == "" && cfg.dataDir == "" {
		log.Warn("no --data-dir: the SVID and key live in memory only; a restart needs a new join token")
	}
	dp, err := newDataPlane(cfg, src, log, reg)
	if err != nil {
		return err
	}
	var part agentPart
	partDone := make(chan struct{})
	if extra != nil {
		if part, err = extra(dp, reg); err != nil {
			dp.close()
			return err
		}
		dp.drainFirst = partDone // the data plane outlives the part's drain
	}
	ready := func() error {
		if err := src.Ready(); err != nil {
			return err
		}
		return dp.Ready()
	}
	status := func() any {
		dps := dp.Status()
		st := agentStatus{Version: version, Identity: src.Status(), WorkloadAPI: cfg.workloadSocket, DataPlane: &dps}
		if err := ready(); err != nil {
			st.NotReady = err.Error()
		} else {
			st.Ready = true
		}
		return st
	}
	adm, err := admin.Listen(admin.Config{Addr: cfg.admin, Gatherer: reg, Ready: ready, Status: status, Logger: log})
	if err != nil {
		return err
	}
	var wl *workload.Server
	if cfg.workloadSocket != "" {
		// Bound before the identity exists so a bad socket path fails at
		// once; served once there is an SVID to hand out.
		wl, err = workload.Listen(workload.Config{Path: cfg.workloadSocket, UID: cfg.workloadUID, Source: src, Logger: log})
		if err != nil {
			adm.Close()
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Run(gctx) })
	g.Go(func() error {
		if err := src.Bootstrap(gctx); err != nil {
			if wl != nil {
				wl.Close()
			}
			return err
		}
		st := src.Status()
		log.Info("agent identity ready", logkey.SPIFFEID, st.SPIFFEID, logkey.Expiry, st.Expiry, logkey.NextRotate, st.NextRotation)
		if wl != nil {
			g.Go(func() error { return wl.Run(gctx) })
		}
		g.Go(func() error { return dp.Run(gctx) })
		if part != nil {
			g.Go(func() error {
				defer close(partDone)
				return part.Run(gctx)
			})
		}
		return src.Run(gctx)
	})
	err = g.Wait()
	switch {
	case errors.Is(err, identity.ErrNeedToken):
		return usagef("agent: %v", err)
	case err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled):
		return nil
	}
	return err
}

func cmdStatus(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("status", env)
	addr := fs.String("admin", "127.0.0.1:15000", "the agent's admin listener")
	raw := fs.Bool("json", false, "print the raw /status JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the agent")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("status: --admin %q: want HOST:PORT", *addr)
	}
	u.Path = "/status"
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return usagef("status: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the agent at %s: %w (is `meshguard agent` running with --admin %s?)", u.Host, err, u.Host)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read the agent's status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the agent at %s answered %s", u.Host, resp.Status)
	}
	if *raw {
		_, err := env.stdout.Write(body)
		return err
	}
	return printStatus(env.stdout, body, time.Now())
}

// printStatus renders /status for people: the known sections as aligned
// lines, anything else as compact JSON.
func printStatus(w io.Writer, body []byte, now time.Time) error {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("decode the agent's status: %w", err)
	}
	var st agentStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("decode the agent's status: %w", err)
	}
	line := func(k, v string) { fmt.Fprintf(w, "%-16s %s\n", k+":", v) }
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := t.Sub(now).Round(time.Second)
		if d < 0 {
			return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), -d)
		}
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), d)
	}
	readyText := "yes"
	if !st.Ready {
		readyText = "NO: " + st.NotReady
	}
	line("ready", readyText)
	line("version", st.Version)
	id := st.Identity
	line("SPIFFE ID", orDash(id.SPIFFEID))
	line("identity from", orDash(id.Source))
	line("SVID expires", when(id.Expiry))
	line("next rotation", when(id.NextRotation))
	line("rotations", strconv.FormatUint(id.Rotations, 10))
	line("bundle roots", strconv.Itoa(id.BundleAuthorities))
	if id.LastError != "" {
		line("last error", id.LastError)
	}
	if st.WorkloadAPI != "" {
		line("Workload API", st.WorkloadAPI)
	}
	if dp := st.DataPlane; dp != nil {
		line("inbound", orDash(dp.Inbound))
		line("outbound", orDash(dp.Outbound))
		line("policy revision", orDash(dp.PolicyRevision))
		line("routes", orDash(strings.Join(dp.Routes, " ")))
		if dp.RegistryRevision != 0 {
			line("registry rev", strconv.FormatInt(dp.RegistryRevision, 10))
		}
		services := make([]string, 0, len(dp.Peers))
		for svc := range dp.Peers {
			services = append(services, svc)
		}
		sort.Strings(services)
		if len(services) == 0 {
			line("peers", "-")
		}
		for i, svc := range services {
			label := ""
			if i == 0 {
				label = "peers"
			}
			for _, ep := range dp.Peers[svc] {
				key := ""
				if label != "" {
					key, label = label+":", ""
				}
				fmt.Fprintf(w, "%-16s %-10s %s\n", key, svc, ep)
			}
		}
	}
	known := map[string]bool{"version": true, "ready": true, "not_ready": true, "identity": true, "workload_api": true, "data_plane": true}
	var rest []string
	for k := range doc {
		if !known[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		line(k, string(doc[k]))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// validLabel accepts a short label value: letters, digits, '.', '_', '-'.
func validLabel(v string) bool {
	if len(v) == 0 || len(v) > 63 {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
