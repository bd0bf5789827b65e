package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/sync/errgroup"

	"github.com/meshguard/meshguard/authz"
	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/proxy"
	"github.com/meshguard/meshguard/registry"
)

// deregisterTimeout bounds the registry call made at shutdown, before the
// listeners drain.
const deregisterTimeout = 5 * time.Second

// dataPlane is the part of an agent that carries traffic: the inbound and
// outbound listeners, the policy engine and its audit sink, and the registry
// client (registration of this agent, watch of the others).
type dataPlane struct {
	cfg        *agentConfig
	log        *slog.Logger
	src        agentIdentity
	engine     *authz.Engine // nil without --policy
	auditor    *authz.Auditor
	closeAudit func() error
	inbound    *proxy.Inbound
	outbound   *proxy.Outbound
	peers      *meshPeers
	inLn       net.Listener // bound at start; served once the agent has its SVID
	inAddr     string       // the bound addresses, fixed at start (read by Status
	outAddr    string       // from the admin goroutine while Run starts the proxies)
	outLn      net.Listener
	metrics    *proxy.Metrics
	// authorizer decides inbound requests: the engine, or denyAll.
	authorizer proxy.Authorizer
	serving    chan struct{} // closed once the inbound and outbound proxies exist
	// drainFirst, if set, is closed when a part built on the data plane (the
	// edge's listener) has drained; the proxies keep serving until then.
	drainFirst <-chan struct{}
	watcher    *registry.Watcher   // nil without a registry
	register   *registry.Registrar // nil without a registry
	reg        prometheus.Registerer
}

// newDataPlane builds the data plane and binds its listeners, so that a bad
// or busy address fails at start with exit 2. Nothing is served until Run.
func newDataPlane(cfg *agentConfig, src agentIdentity, log *slog.Logger, reg prometheus.Registerer) (_ *dataPlane, err error) {
	d := &dataPlane{cfg: cfg, log: log, src: src, reg: reg, serving: make(chan struct{})}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	auditW, closeAudit, err := authz.OpenAuditLog(cfg.auditLog, os.Stderr)
	if err != nil {
		return nil, usagef("agent: --audit-log %s: %v", cfg.auditLog, err)
	}
	d.closeAudit = closeAudit
	d.auditor = authz.NewAuditor(auditW, authz.AuditConfig{AllowedRate: cfg.auditAllowed, Registerer: reg, Logger: log})

	var authorizer proxy.Authorizer
	if cfg.policyDir != "" {
		d.engine, err = authz.New(authz.Config{
			Dir: cfg.policyDir, Timeout: cfg.policyTimeout, CacheSize: cfg.decisionCache, CacheTTL: cfg.decisionCacheTTL,
			DryRun: cfg.dryRun, Audit: d.auditor, Logger: log, Registerer: reg,
		})
		if err != nil {
			return nil, usagef("agent: --policy %s: %v", cfg.policyDir, err)
		}
		authorizer = d.engine
	} else {
		log.Warn("no --policy: every inbound request is denied (fail closed); outbound calls work")
		authorizer = denyAll{}
	}

	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("agent: proxy metrics: %w", err)
	}
	d.peers = newMeshPeers(cfg.peers)

	d.inLn, err = net.Listen("tcp", cfg.inbound)
	if err != nil {
		return nil, usagef("agent: --inbound %s: %v", cfg.inbound, err)
	}
	d.outLn, err = net.Listen("tcp", cfg.outbound)
	if err != nil {
		return nil, usagef("agent: --outbound %s: %v", cfg.outbound, err)
	}
	d.inAddr, d.outAddr = d.inLn.Addr().String(), d.outLn.Addr().String()
	d.authorizer, d.metrics = authorizer, metrics
	return d, nil
}

// startListeners builds the inbound and outbound proxies on the bound
// listeners; they need the agent's SVID, so this runs after bootstrap.
func (d *dataPlane) startListeners() error {
	var err error
	d.inbound, err = proxy.NewInbound(proxy.InboundConfig{
		Listener: d.inLn, App: d.cfg.app, AppProtocol: d.cfg.appProtocol, Service: d.cfg.service,
		Source: d.src, Authorizer: d.authorizer, Metrics: d.metrics, Logger: d.log,
		RequestTimeout: d.cfg.requestTimeout, MaxHeaderBytes: d.cfg.maxHeaderBytes,
	})
	if err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
	d.inLn = nil // owned by the inbound now
	d.outbound, err = proxy.NewOutbound(proxy.OutboundConfig{
		Listener: d.outLn, Source: d.src, Peers: d.peers, Metrics: d.metrics, Logger: d.log,
		RequestTimeout: d.cfg.requestTimeout, MaxHeaderBytes: d.cfg.maxHeaderBytes,
	})
	if err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	d.outLn = nil
	return nil
}

// startRegistry builds the registry client once the agent has its SVID
// (the registry API authenticates it by that SVID). Only agents whose
// identity comes from the meshguard CA have a registry.
func (d *dataPlane) startRegistry() error {
	if d.cfg.caURL == "" {
		return nil
	}
	svid, err := d.src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	hc, err := caHTTPClient(d.cfg.caURL, d.src, svid.ID.TrustDomain())
	if err != nil {
		return err
	}
	client, err := registry.NewClient(hc, d.cfg.caURL)
	if err != nil {
		return fmt.Errorf("registry client: %w", err)
	}
	d.watcher, err = registry.NewWatcher(registry.WatcherConfig{
		Client: client, DataDir: d.cfg.dataDir, Registerer: d.reg, Logger: d.log,
		OnChange: d.peers.setTable,
	})
	if err != nil {
		return fmt.Errorf("registry watcher: %w", err)
	}
	d.peers.setTable(d.watcher.Table()) // the persisted snapshot, if any
	addr, err := advertiseAddr(d.cfg.advertise, d.inbound.Addr())
	if err != nil {
		// Still a working agent (static peers, outbound calls, the watch),
		// but peers cannot find it through the registry.
		d.log.Warn("not registering in the registry", logkey.Error, err.Error())
		return nil
	}
	d.register, err = registry.NewRegistrar(registry.RegistrarConfig{
		Client: client, Logger: d.log,
		Registration: registry.Registration{
			Service: d.cfg.service, SPIFFEID: svid.ID.String(), Address: addr, Routes: d.cfg.routes,
			Labels: versionLabel(d.cfg.version), Weight: d.cfg.weight,
		},
	})
	if err != nil {
		return usagef("agent: registration: %v", err)
	}
	return nil
}

// Run serves until ctx is done, then shuts down in the order that loses no
// request: deregister (peers stop sending here), drain the listeners, and
// only then flush the audit log.
func (d *dataPlane) Run(ctx context.Context) error {
	defer d.close()
	if err := d.startListeners(); err != nil {
		return err
	}
	close(d.serving)
	if err := d.startRegistry(); err != nil {
		return err
	}
	auditCtx, stopAudit := context.WithCancel(context.Background())
	auditDone := make(chan error, 1)
	go func() { auditDone <- d.auditor.Run(auditCtx) }()

	serveCtx, stopServing := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(serveCtx)
	g.Go(func() error { return d.inbound.Run(gctx) })
	g.Go(func() error { return d.outbound.Run(gctx) })
	if d.engine != nil {
		g.Go(func() error { return d.engine.Run(gctx) })
	}
	regCtx, stopRegistering := context.WithCancel(gctx)
	if d.watcher != nil {
		g.Go(func() error { return d.watcher.Run(gctx) })
	}
	regDone := make(chan struct{})
	if d.register != nil {
		g.Go(func() error {
			defer close(regDone)
			return d.register.Run(regCtx)
		})
	} else {
		close(regDone)
	}
	d.log.Info("data plane serving", "inbound", d.inbound.Addr().String(), "outbound", d.outbound.Addr().String())

	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a part failed: shut the rest down the same way
	}
	stopRegistering()
	<-regDone // Deregister must follow Run's end, or Run would start after it
	if d.register != nil {
		dctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
		if err := d.register.Deregister(dctx); err != nil {
			d.log.Warn("deregistering at shutdown failed; the entry expires with its lease", logkey.Error, err.Error())
		} else {
			d.log.Info("deregistered from the registry")
		}
		cancel()
	}
	if d.drainFirst != nil && ctx.Err() != nil {
		// A requested shutdown: the part got the same signal; its in-flight
		// requests still use the outbound path. (After a failure of our
		// own, nothing stops the part, so do not wait for it.)
		<-d.drainFirst
	}
	stopServing()
	err := g.Wait()
	stopAudit()
	if aerr := <-auditDone; aerr != nil && err == nil {
		err = aerr
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Outbound waits until the outbound proxy exists (the agent has its SVID)
// and returns it; nil if ctx ends first.
func (d *dataPlane) Outbound(ctx context.Context) *proxy.Outbound {
	select {
	case <-d.serving:
		return d.outbound
	case <-ctx.Done():
		return nil
	}
}

// Ready is nil when inbound requests can be decided: a policy revision is
// loaded (or no policy is configured, so every request is denied).
func (d *dataPlane) Ready() error {
	if d.engine != nil {
		if err := d.engine.Ready(); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
	}
	return nil
}

// dataPlaneStatus is the data plane's part of /status.
type dataPlaneStatus struct {
	Inbound          string              `json:"inbound"`
	Outbound         string              `json:"outbound"`
	PolicyRevision   string              `json:"policy_revision,omitempty"`
	Routes           []string            `json:"routes,omitempty"`
	Peers            map[string][]string `json:"peers"`
	RegistryRevision int64               `json:"registry_revision,omitempty"`
}

func (d *dataPlane) Status() dataPlaneStatus {
	st := dataPlaneStatus{Inbound: d.inAddr, Outbound: d.outAddr, Routes: d.cfg.routes}
	if d.engine != nil {
		st.PolicyRevision = d.engine.Revision()
	}
	st.Peers, st.RegistryRevision = d.peers.summary()
	return st
}

func (d *dataPlane) close() {
	for _, ln := range []net.Listener{d.inLn, d.outLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if d.closeAudit != nil {
		_ = d.closeAudit()
		d.closeAudit = nil
	}
}

// denyAll is the authorizer of an agent without --policy: it fails closed.
type denyAll struct{}

func (denyAll) Authorize(_ context.Context, _ *authz.Input, _ string) authz.Decision {
	return authz.Decision{Allow: false, Reasons: []string{"no policy configured (--policy)"}}
}

// versionLabel is the registry labels for --version.
func versionLabel(v string) map[string]string {
	if v == "" {
		return nil
	}
	return map[string]string{"version": v}
}

// advertiseAddr is the inbound address peers dial: --advertise, or the
// bound inbound address when its host is a concrete IP.
func advertiseAddr(advertise string, bound net.Addr) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	host, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", fmt.Errorf("inbound address %s: %w", bound, err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "", fmt.Errorf("--inbound listens on %s, which peers cannot dial: set --advertise HOST:PORT", bound)
	}
	return net.JoinHostPort(host, port), nil
}

// caHTTPClient is an mTLS client for the CA's registry API: it presents the
// agent's current SVID and verifies the CA's server certificate against the
// current trust bundle, both read at every new connection.
func caHTTPClient(caURL string, src agentIdentity, td spiffeid.TrustDomain) (*http.Client, error) {
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, usagef("agent: --ca %q: want https://HOST:PORT", caURL)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			bundle, err := src.GetX509BundleForTrustDomain(td)
			if err != nil {
				return nil, fmt.Errorf("trust bundle: %w", err)
			}
			roots := x509.NewCertPool()
			for _, c := range bundle.X509Authorities() {
				roots.AddCert(c)
			}
			host, _, _ := net.SplitHostPort(addr)
			conf := &tls.Config{
				MinVersion:           tls.VersionTLS12,
				RootCAs:              roots,
				ServerName:           host,
				NextProtos:           []string{"h2", "http/1.1"},
				GetClientCertificate: tlsconfig.GetClientCertificate(src),
			}
			return (&tls.Dialer{NetDialer: dialer, Config: conf}).DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr}, nil
}

// meshPeers is the outbound routing table: static --peer entries merged with
// the registry's table. The registry part is rebuilt once per registry
// change, never per request.
type meshPeers struct {
	byName map[string][]proxy.Endpoint // static endpoints by service (already checked by proxy.ParsePeer)
	table  atomic.Pointer[peerTable]
}

type peerTable struct {
	reg      *registry.Table
	services map[string][]proxy.Endpoint // registry endpoints merged with static ones
}

func newMeshPeers(static []proxy.Endpoint) *meshPeers {
	p := &meshPeers{byName: map[string][]proxy.Endpoint{}}
	for _, e := range static {
		p.byName[e.Service] = append(p.byName[e.Service], e)
	}
	p.setTable(nil)
	return p
}

// setTable converts a registry table into proxy endpoints, merged with the
// static peers (a static endpoint wins over a registry entry at the same
// address). Entries with an unparseable SPIFFE ID are skipped: the outbound
// side must know exactly which identity to expect.
func (p *meshPeers) setTable(t *registry.Table) {
	pt := &peerTable{reg: t, services: map[string][]proxy.Endpoint{}}
	for svc, eps := range p.byName {
		pt.services[svc] = append([]proxy.Endpoint(nil), eps...)
	}
	if t != nil {
		for _, svc := range t.Services() {
			for _, e := range t.Endpoints(svc) {
				id, err := spiffeid.FromString(e.SPIFFEID)
				if err != nil || p.hasStatic(svc, e.Address) {
					continue
				}
				pt.services[svc] = append(pt.services[svc], proxy.Endpoint{
					Service: e.Service, ID: id, Addr: e.Address, Labels: e.Labels, Weight: e.Weight,
				})
			}
		}
	}
	p.table.Store(pt)
}

func (p *meshPeers) hasStatic(svc, addr string) bool {
	for _, e := range p.byName[svc] {
		if e.Addr == addr {
			return true
		}
	}
	return false
}

// Endpoints implements proxy.Peers.
func (p *meshPeers) Endpoints(service string) []proxy.Endpoint {
	return p.table.Load().services[service]
}

// Route implements proxy.Peers: registry route prefixes (--peer entries
// carry none, so without a registry table no path is routed).
func (p *meshPeers) Route(path string) (string, bool) {
	if t := p.table.Load().reg; t != nil {
		return t.Route(path)
	}
	return "", false
}

// summary lists each service's endpoints for /status.
func (p *meshPeers) summary() (map[string][]string, int64) {
	pt := p.table.Load()
	out := map[string][]string{}
	for svc, eps := range pt.services {
		for _, e := range eps {
			out[svc] = append(out[svc], e.Addr+" "+e.ID.String()+weightNote(e))
		}
		sort.Strings(out[svc])
	}
	var rev int64
	if pt.reg != nil {
		rev = pt.reg.Revision()
	}
	return out, rev
}

func weightNote(e proxy.Endpoint) string {
	if e.Weight == 0 {
		return ""
	}
	return " weight=" + strconv.Itoa(e.Weight)
}
