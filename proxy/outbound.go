package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/internal/h2client"
	"github.com/meshguard/meshguard/internal/h2server"
	"github.com/meshguard/meshguard/internal/logkey"
)

// Ejection configures passive outlier ejection per endpoint.
type Ejection struct {
	ConsecutiveFailures int           // failures in a row that eject, default 5
	BaseTime            time.Duration // first ejection; the n-th lasts n × BaseTime, default 30s
	MaxTime             time.Duration // cap, default 5m
}

// OutboundConfig configures the outbound (plaintext, local) listener.
type OutboundConfig struct {
	Addr                 string       // listen address, e.g. "127.0.0.1:15001"; unused when Listener is set
	Listener             net.Listener // optional pre-opened TCP listener
	Source               Source       // the agent's live SVID and bundle
	Peers                Peers        // routing table
	Metrics              *Metrics     // required
	Logger               *slog.Logger // nil: discard
	RequestTimeout       time.Duration
	MaxHeaderBytes       int           // default DefaultMaxHeaderBytes
	MaxConcurrentStreams int           // h2c streams per local connection, default DefaultMaxConcurrentStreams
	MaxStreamsPerPeer    int           // concurrent requests per endpoint connection, default 100
	MaxRetries           int           // retries per request, default 2; negative disables
	RetryBudget          RetryBudget   // default 20% + 10/s over 10s
	Ejection             Ejection      // outlier ejection
	DialTimeout          time.Duration // default 5s
	RenewBefore          time.Duration // redial this long before either side's SVID expires, default 1m
	ReadHeaderTimeout    time.Duration // default DefaultReadHeaderTimeout
	IdleTimeout          time.Duration // default DefaultIdleTimeout; pooled peer connections idle out at half of it
	ShutdownTimeout      time.Duration // default DefaultShutdownTimeout
	Now                  func() time.Time
	RandIntN             func(n int) int // default math/rand/v2.IntN
}

// Outbound routes plaintext requests from the local app to peer services
// over pooled mTLS HTTP/2 connections.
type Outbound struct {
	cfg     OutboundConfig
	clk     startClock // cfg.Now, or the arrival reading on the real clock
	log     *slog.Logger
	ln      net.Listener
	srv     *http.Server     // HTTP/1.1 from the app
	h2s     *h2server.Server // h2c (prior knowledge) from the app
	fwd     *forwarder
	h2      h2client.Config
	ctx     context.Context // lives until Run ends; dials use it
	cancel  context.CancelFunc
	wg      sync.WaitGroup // dials and drains
	started atomic.Bool

	pmu   sync.RWMutex
	peers map[peerKey]*peer

	bmu     sync.RWMutex
	budgets map[string]*budget
}

// NewOutbound validates cfg and opens the listener.
func NewOutbound(cfg OutboundConfig) (*Outbound, error) {
	if cfg.Source == nil || cfg.Peers == nil || cfg.Metrics == nil {
		return nil, errors.New("new outbound: Source, Peers and Metrics are required")
	}
	clk := newStartClock(cfg.Now)
	setDefaults(&cfg.MaxHeaderBytes, &cfg.MaxConcurrentStreams, &cfg.ReadHeaderTimeout, &cfg.IdleTimeout, &cfg.ShutdownTimeout, &cfg.Now)
	if cfg.MaxStreamsPerPeer <= 0 {
		cfg.MaxStreamsPerPeer = 100
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = 2
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	cfg.RetryBudget = cfg.RetryBudget.withDefaults()
	if cfg.Ejection.ConsecutiveFailures <= 0 {
		cfg.Ejection.ConsecutiveFailures = 5
	}
	if cfg.Ejection.BaseTime <= 0 {
		cfg.Ejection.BaseTime = 30 * time.Second
	}
	if cfg.Ejection.MaxTime <= 0 {
		cfg.Ejection.MaxTime = 5 * time.Minute
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = time.Minute
	}
	if cfg.RandIntN == nil {
		cfg.RandIntN = rand.IntN
	}
	o := &Outbound{
		cfg:     cfg,
		clk:     clk,
		log:     orDiscard(cfg.Logger).With(logkey.Component, "outbound"),
		peers:   make(map[peerKey]*peer),
		budgets: make(map[string]*budget),
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.h2 = h2client.Config{
		MaxReadFrameSize: 256 << 10,
		MaxHeaderBytes:   cfg.MaxHeaderBytes,
		PingInterval:     30 * time.Second,
		PingTimeout:      15 * time.Second,
		// Close idle pooled connections before the peer's server (same
		// default IdleTimeout) does, so a request never races its GOAWAY.
		IdleTimeout: cfg.IdleTimeout / 2,
	}
	o.fwd = &forwarder{rt: o, bufs: newBufferPool(256), scheme: "https", onError: o.upstreamError}
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			o.cancel()
			return nil, fmt.Errorf("new outbound: listen on %s: %w", cfg.Addr, err)
		}
	}
	o.ln = ln
	o.srv = &http.Server{
		Handler:           o,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Protocols:         new(http.Protocols),
		ErrorLog:          slog.NewLogLogger(o.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if fc, ok := c.(*framingConn); ok {
				return context.WithValue(ctx, scanKey{}, &fc.scan)
			}
			return ctx
		},
	}
	// HTTP/1.1 here, h2c with prior knowledge in h2server (the listener
	// sorts connections by their first bytes). net/http never performs the
	// "Upgrade: h2c" dance, and the handler strips Upgrade anyway.
	o.srv.Protocols.SetHTTP1(true)
	var err error
	o.h2s, err = newH2Server(o, true, cfg.MaxConcurrentStreams, cfg.MaxHeaderBytes, cfg.IdleTimeout, cfg.ReadHeaderTimeout, cfg.RequestTimeout, nil, o.log)
	if err != nil {
		o.cancel()
		_ = ln.Close()
		return nil, fmt.Errorf("new outbound: %w", err)
	}
	return o, nil
}

// Addr is the listener's address.
func (o *Outbound) Addr() net.Addr { return o.ln.Addr() }

// Run serves until ctx is done, then drains the listener and the pool.
func (o *Outbound) Run(ctx context.Context) error {
	if !o.started.CompareAndSwap(false, true) {
		return errors.New("outbound: Run called twice")
	}
	defer o.cancel()
	pl := newPlainListener(o.ln, o.cfg.ReadHeaderTimeout, func(remote net.Addr, err error) {
		o.log.Debug("connection from " + remote.String() + ": " + err.Error())
	}, func(c net.Conn) { o.h2s.ServeConn(context.Background(), c) })
	defer pl.wait()
	defer o.h2s.Close()
	defer pl.Close()
	errc := make(chan error, 1)
	go func() { errc <- o.srv.Serve(pl) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		o.watch(watchCtx)
	}()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	stopWatch()
	<-watchDone
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.ShutdownTimeout)
	defer cancel()
	var drainErr error
	if serveErr == nil {
		drainErr = drainBoth(sctx, o.srv, o.h2s, errc)
	}
	o.closePool()
	o.cancel()
	o.wg.Wait()
	switch {
	case serveErr != nil:
		return fmt.Errorf("outbound: serve: %w", serveErr)
	case drainErr != nil:
		_ = o.srv.Close()
		return fmt.Errorf("outbound: drain: %w", drainErr)
	}
	return nil
}

// watch reacts to identity changes (drain pooled connections whose peer no
// longer verifies) and sweeps dead connections periodically.
func (o *Outbound) watch(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		ch := o.cfg.Source.Changed()
		select {
		case <-ctx.Done():
			return
		case <-ch:
			o.recheck()
		case <-tick.C:
			o.sweep()
		}
	}
}

func (o *Outbound) allPeers() []*peer {
	o.pmu.RLock()
	defer o.pmu.RUnlock()
	ps := make([]*peer, 0, len(o.peers))
	for _, p := range o.peers {
		ps = append(ps, p)
	}
	return ps
}

// recheck drains every pooled connection whose peer no longer verifies
// against the current bundle. In-flight requests finish (GOAWAY + Shutdown);
// the next request dials afresh.
func (o *Outbound) recheck() {
	for _, p := range o.allPeers() {
		p.mu.Lock()
		c := p.cur
		p.mu.Unlock()
		if c == nil {
			continue
		}
		if err := p.stillValid(c); err != nil {
			o.log.Info("draining connection: peer no longer verifies", logkey.Peer, p.id.String(), logkey.Addr, p.addr, logkey.Error, err.Error())
			p.drop(c)
		}
	}
}

// sweep retires dead or expiring idle connections so the gauge is honest.
func (o *Outbound) sweep() {
	now := o.cfg.Now()
	for _, p := range o.allPeers() {
		p.mu.Lock()
		c := p.cur
		p.mu.Unlock()
		if c == nil {
			continue
		}
		if st := c.cc.State(); st.Closed || st.Closing || !now.Before(c.renewAt) {
			p.drop(c)
		}
	}
}

// retire drains c in the background: no new streams, GOAWAY, wait for the
// in-flight ones (up to the shutdown timeout), close.
func (o *Outbound) retire(c *pconn) {
	if !c.retired.CompareAndSwap(false, true) {
		return
	}
	c.cc.SetDoNotReuse()
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout())
		defer cancel()
		if err := c.cc.Shutdown(ctx); err != nil {
			_ = c.cc.Close()
		}
		o.cfg.Metrics.upstreams.Dec()
	}()
}

func (o *Outbound) drainTimeout() time.Duration {
	return max(o.cfg.ShutdownTimeout, o.cfg.RequestTimeout)
}

func (o *Outbound) closePool() {
	for _, p := range o.allPeers() {
		p.mu.Lock()
		c := p.cur
		p.cur = nil
		p.mu.Unlock()
		if c != nil {
			o.retire(c)
		}
	}
}

// peerFor returns the state of one endpoint, creating it on first use.
func (o *Outbound) peerFor(ep *Endpoint) *peer {
	k := peerKey{ep.ID, ep.Addr}
	o.pmu.RLock()
	p := o.peers[k]
	o.pmu.RUnlock()
	if p != nil {
		return p
	}
	o.pmu.Lock()
	defer o.pmu.Unlock()
	if p = o.peers[k]; p == nil {
		conf := clientTLS(o.cfg.Source, ep.ID)
		conf.ServerName, _, _ = net.SplitHostPort(ep.Addr) // as tls.Dialer sets it; a peer's address never changes
		p = &peer{o: o, id: ep.ID, addr: ep.Addr, tls: conf, sem: make(chan struct{}, o.cfg.MaxStreamsPerPeer)}
		o.peers[k] = p
	}
	return p
}

func (o *Outbound) budgetFor(service string) *budget {
	o.bmu.RLock()
	b := o.budgets[service]
	o.bmu.RUnlock()
	if b != nil {
		return b
	}
	o.bmu.Lock()
	defer o.bmu.Unlock()
	if b = o.budgets[service]; b == nil {
		b = newBudget(o.cfg.RetryBudget)
		o.budgets[service] = b
	}
	return b
}

// ServeHTTP handles one request from the local app.
func (o *Outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := o.clk.start(r)
	sw := getStatusWriter(w)
	svc := o.serve(sw, r)
	o.cfg.Metrics.request(dirOutbound, svc, sw.status(), o.cfg.Now().Sub(start).Seconds())
	putStatusWriter(sw)
}

type scanKey struct{}

func (o *Outbound) serve(w http.ResponseWriter, r *http.Request) string {
	if r.ProtoMajor == 1 {
		if scan, _ := r.Context().Value(scanKey{}).(*h1Scanner); scan != nil && scan.refuse() {
			w.Header().Set("Connection", "close")
			writeJSONError(w, http.StatusBadRequest, "bad request", "detail", "ambiguous message framing (Content-Length with Transfer-Encoding, or conflicting Content-Length)")
			return ""
		}
	}
	path, rawQuery, err := NormalizePath(r.RequestURI)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad request", "detail", err.Error())
		return ""
	}
	svc := o.route(r.Host, path)
	if svc == "" {
		writeJSONError(w, http.StatusNotFound, "unknown service")
		return ""
	}
	teTrailers := stripHopByHop(r.Header)
	delete(r.Header, headerXFCC)
	if teTrailers {
		r.Header["Te"] = teTrailersValue
	}
	if strings.IndexByte(path, '%') < 0 {
		r.URL.Path, r.URL.RawPath = path, ""
	} else {
		p, err := url.PathUnescape(path)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad request", "detail", err.Error())
			return svc
		}
		r.URL.Path, r.URL.RawPath = p, path
	}
	r.URL.RawQuery, r.URL.ForceQuery = rawQuery, false
	// The service travels to RoundTrip in the URL; the Host header the app
	// sent goes to the peer unchanged.
	r.URL.Host = svc
	if _, set := r.Context().Deadline(); !set && o.cfg.RequestTimeout > 0 {
		// (HTTP/2 requests have it already: see newH2Server.)
		ctx, cancel := context.WithTimeout(r.Context(), o.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	o.fwd.ServeHTTP(w, r)
	return svc
}

// route picks the service: from Host ("users", "users.mesh", with or
// without port) when that names a known service, else from the longest
// registered route prefix of the path.
func (o *Outbound) route(host, path string) string {
	h := host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if len(h) > 5 && strings.EqualFold(h[len(h)-5:], ".mesh") {
		h = h[:len(h)-5]
	}
	if h != "" && ValidServiceName(h) == nil && len(o.cfg.Peers.Endpoints(h)) > 0 {
		return h
	}
	if h != "" {
		if low := strings.ToLower(h); low != h && ValidServiceName(low) == nil && len(o.cfg.Peers.Endpoints(low)) > 0 {
			return low
		}
	}
	if svc, ok := o.cfg.Peers.Route(path); ok {
		return svc
	}
	return ""
}

// RoundTrip implements http.RoundTripper for the reverse proxy: pick an
// endpoint of req.URL.Host (the service), send over its pooled connection,
// retry idempotent requests that were never sent, within the budget.
func (o *Outbound) RoundTrip(req *http.Request) (*http.Response, error) {
	svc := req.URL.Host
	eps := o.cfg.Peers.Endpoints(svc)
	b := o.budgetFor(svc)
	now := o.clk.start(req) // one clock reading for the budget, the pick and the connection
	b.deposit(now)
	var tried [4]*peer
	var lastErr error
	for attempt := 0; ; attempt++ {
		p := o.pick(eps, tried[:min(attempt, len(tried))], now)
		if p == nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, errNoHealthy
		}
		if attempt < len(tried) {
			tried[attempt] = p
		}
		resp, touched, err := p.roundTrip(req, now)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if req.Context().Err() != nil || attempt >= o.cfg.MaxRetries || !retryable(req, touched, err) {
			return nil, err
		}
		now = o.cfg.Now()
		if !b.withdraw(now) {
			return nil, err
		}
		o.log.Debug("retrying", logkey.Service, svc, logkey.Attempt, attempt+1, logkey.Error, err.Error())
	}
}

// retryable says whether a request that failed with a transport error (no
// response was received) may be sent again, to another endpoint. Only
// idempotent methods are retried (RFC 9110 §9.2.2). One that never reached
// a connection always may be; one that may have reached the peer (a
// connection that broke mid-flight, e.g. the peer was killed) only when it
// has no body to replay, or when the failure proves it was never sent. An
// HTTP response, even a 5xx, is never retried here.
func retryable(req *http.Request, touched bool, err error) bool {
	if !idempotent(req.Method) {
		return false
	}
	if !touched {
		return true
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	return !hasBody || notSent(err)
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// pick chooses an endpoint: first a version by weight (when weights are
// given), then power-of-two-choices over latency × in-flight among the
// healthy endpoints not yet tried. It falls back to tried endpoints when no
// other is healthy (a redial of the only endpoint).
func (o *Outbound) pick(eps []Endpoint, tried []*peer, now time.Time) *peer {
	if p := o.pickFrom(eps, tried, now); p != nil || len(tried) == 0 {
		return p
	}
	return o.pickFrom(eps, nil, now)
}

func (o *Outbound) pickFrom(eps []Endpoint, tried []*peer, at time.Time) *peer {
	now := at.UnixNano()
	var buf [16]*peer
	cands := buf[:0]
	var vbuf [8]struct {
		version string
		weight  int
	}
	versions := vbuf[:0]
	weighted := false
	for i := range eps {
		if eps[i].Weight > 0 {
			weighted = true
			break
		}
	}
	healthy := func(ep *Endpoint) *peer {
		p := o.peerFor(ep)
		if p.ejected(now) {
			return nil
		}
		for _, t := range tried {
			if t == p {
				return nil
			}
		}
		return p
	}
	version := ""
	if weighted {
		total := 0
		for i := range eps {
			ep := &eps[i]
			if ep.Weight <= 0 || healthy(ep) == nil {
				continue
			}
			v := ep.Labels["version"]
			found := false
			for j := range versions {
				if versions[j].version == v {
					found = true
					if ep.Weight > versions[j].weight {
						total += ep.Weight - versions[j].weight
						versions[j].weight = ep.Weight
					}
				}
			}
			if !found {
				versions = append(versions, struct {
					version string
					weight  int
				}{v, ep.Weight})
				total += ep.Weight
			}
		}
		if total == 0 {
			weighted = false // no weighted endpoint healthy: use any healthy one
		} else {
			r := o.cfg.RandIntN(total)
			for _, v := range versions {
				if r < v.weight {
					version = v.version
					break
				}
				r -= v.weight
			}
		}
	}
	for i := range eps {
		ep := &eps[i]
		if weighted && (ep.Weight <= 0 || ep.Labels["version"] != version) {
			continue
		}
		if p := healthy(ep); p != nil {
			cands = append(cands, p)
		}
	}
	var p *peer
	switch len(cands) {
	case 0:
		return nil
	case 1:
		p = cands[0]
	default:
		i := o.cfg.RandIntN(len(cands))
		j := o.cfg.RandIntN(len(cands) - 1)
		if j >= i {
			j++
		}
		p = cands[i]
		if cands[j].cost() < p.cost() {
			p = cands[j]
		}
	}
	return p
}

func (o *Outbound) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	svc := r.URL.Host
	switch {
	case errors.Is(err, errNoHealthy):
		writeJSONError(w, http.StatusServiceUnavailable, "no healthy endpoint", "service", svc)
	case errors.Is(err, context.DeadlineExceeded):
		writeJSONError(w, http.StatusGatewayTimeout, "upstream timeout", "service", svc)
	case r.Context().Err() != nil:
		w.WriteHeader(http.StatusBadGateway) // the app went away
	default:
		o.log.Warn("forward to peer failed", logkey.Service, svc, logkey.Error, err.Error())
		writeJSONError(w, http.StatusBadGateway, "upstream unavailable", "service", svc)
	}
}
