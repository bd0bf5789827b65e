package proxy

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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/authz"
	"github.com/meshguard/meshguard/internal/h2server"
	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/internal/rawsock"
	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// App protocols for InboundConfig.AppProtocol.
const (
	AppHTTP1 = "http1" // HTTP/1.1 with a keep-alive pool (default)
	AppH2C   = "h2c"   // HTTP/2 with prior knowledge, for gRPC apps
)

// Defaults shared by both listeners.
const (
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxConcurrentStreams = 1000
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultShutdownTimeout      = 15 * time.Second
)

// InboundConfig configures the inbound (mTLS) listener.
type InboundConfig struct {
	Addr                 string       // listen address, e.g. "0.0.0.0:15443"; unused when Listener is set
	Listener             net.Listener // optional pre-opened TCP listener
	App                  string       // the local app, host:port
	AppProtocol          string       // AppHTTP1 (default) or AppH2C
	Service              string       // this agent's service name (destination.service)
	Source               Source       // the agent's live SVID and bundle
	Authorizer           Authorizer   // the policy decision per request
	Metrics              *Metrics     // required
	Logger               *slog.Logger // nil: discard
	RequestTimeout       time.Duration
	MaxHeaderBytes       int           // default DefaultMaxHeaderBytes
	MaxConcurrentStreams int           // HTTP/2 streams per connection, default DefaultMaxConcurrentStreams
	ReadHeaderTimeout    time.Duration // default DefaultReadHeaderTimeout
	IdleTimeout          time.Duration // default DefaultIdleTimeout
	ShutdownTimeout      time.Duration // drain deadline in Run, default DefaultShutdownTimeout
	Now                  func() time.Time
}

// Inbound terminates mTLS from peers, authorizes each request and forwards
// allowed ones to the app.
type Inbound struct {
	cfg     InboundConfig
	clk     startClock // cfg.Now, or the arrival reading on the real clock
	log     *slog.Logger
	ln      net.Listener
	tlsConf *tls.Config
	srv     *http.Server     // HTTP/1.1 peers
	h2      *h2server.Server // HTTP/2 peers (ALPN h2)
	fwd     *forwarder
	app     appClient
	td      spiffeid.TrustDomain
	ownID   atomic.Pointer[string]
	gen     atomic.Uint64 // bumped at every Source change
	names   lowerNames
	started atomic.Bool
}

// inConn is per accepted connection: the verified peer, computed once, and
// the bundle generation it was last verified against.
type inConn struct {
	chain []*x509.Certificate // the peer's certificates, verified at the handshake
	scan  *h1Scanner          // HTTP/1.1 framing verdicts
	gen   atomic.Uint64
	once  sync.Once
	peer  spiffeid.ID
	svc   string
	xfcc  string
	err   error
}

type inConnKey struct{}

// appClient is the inbound's client to the app: an h1Client or, for h2c, an
// http.Transport. Run closes its idle connections at shutdown.
type appClient interface {
	http.RoundTripper
	CloseIdleConnections()
}

// NewInbound validates cfg and opens the listener (so Addr is known before
// Run).
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	if cfg.Source == nil || cfg.Authorizer == nil || cfg.Metrics == nil {
		return nil, errors.New("new inbound: Source, Authorizer and Metrics are required")
	}
	if cfg.App == "" {
		return nil, errors.New("new inbound: App address is required")
	}
	if _, _, err := net.SplitHostPort(cfg.App); err != nil {
		return nil, fmt.Errorf("new inbound: app address %q: %w", cfg.App, err)
	}
	switch cfg.AppProtocol {
	case "":
		cfg.AppProtocol = AppHTTP1
	case AppHTTP1, AppH2C:
	default:
		return nil, fmt.Errorf("new inbound: app protocol %q: want %q or %q", cfg.AppProtocol, AppHTTP1, AppH2C)
	}
	clk := newStartClock(cfg.Now)
	setDefaults(&cfg.MaxHeaderBytes, &cfg.MaxConcurrentStreams, &cfg.ReadHeaderTimeout, &cfg.IdleTimeout, &cfg.ShutdownTimeout, &cfg.Now)
	svid, err := cfg.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("new inbound: get own SVID: %w", err)
	}
	in := &Inbound{cfg: cfg, clk: clk, log: orDiscard(cfg.Logger).With(logkey.Component, "inbound"), td: svid.ID.TrustDomain()}
	own := svid.ID.String()
	in.ownID.Store(&own)

	if cfg.AppProtocol == AppH2C {
		dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		tr := &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return rawsock.Wrap(c), nil
			},
			MaxIdleConns:           1024,
			MaxIdleConnsPerHost:    1024,
			IdleConnTimeout:        90 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes),
			WriteBufferSize:        32 << 10,
			ReadBufferSize:         32 << 10,
			Protocols:              new(http.Protocols),
			HTTP2:                  h2Config(cfg.MaxConcurrentStreams),
		}
		tr.Protocols.SetUnencryptedHTTP2(true)
		in.app = tr
	} else {
		// HTTP/1.1 without http.Transport's per-connection read and write
		// goroutines: see h1Client.
		in.app = newH1Client(cfg.App, cfg.MaxHeaderBytes, clk)
	}
	in.fwd = &forwarder{rt: in.app, bufs: newBufferPool(256), scheme: "http", host: cfg.App, onError: in.appError}

	ln := cfg.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("new inbound: listen on %s: %w", cfg.Addr, err)
		}
	}
	in.ln = ln
	in.tlsConf = serverTLS(cfg.Source, in.td, cfg.Metrics.hsIn.Inc)
	in.srv = &http.Server{
		Handler: in,

		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Protocols:         new(http.Protocols),
		ErrorLog:          slog.NewLogLogger(in.log.Handler(), slog.LevelDebug),
		ConnContext:       in.connContext,
	}
	// TLS is terminated by the listener: net/http gets the HTTP/1.1
	// connections, h2server the ones that negotiated h2.
	in.srv.Protocols.SetHTTP1(true)
	in.h2, err = newH2Server(in, true, cfg.MaxConcurrentStreams, cfg.MaxHeaderBytes, cfg.IdleTimeout, cfg.ReadHeaderTimeout, cfg.RequestTimeout, in.connContext, in.log)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("new inbound: %w", err)
	}
	return in, nil
}

// connContext attaches the connection's verified peer state to its requests.
func (in *Inbound) connContext(ctx context.Context, c net.Conn) context.Context {
	ic := &inConn{}
	ic.gen.Store(in.gen.Load())
	if fc, ok := c.(*framingConn); ok && fc.tls != nil {
		ic.chain = fc.tls.ConnectionState().PeerCertificates
		ic.scan = &fc.scan
	}
	return context.WithValue(ctx, inConnKey{}, ic)
}

// HTTP/2 flow-control and frame tuning of meshguard's servers: bigger
// windows and frames than the protocol defaults (64 KiB, 16 KiB) so one
// multiplexed connection is not flow-control bound.
const (
	h2MaxFrame     = 256 << 10
	h2StreamWindow = 4 << 20
	h2ConnWindow   = 16 << 20
)

// h2Config is the HTTP/2 tuning of meshguard's servers and the app
// transport: bigger windows and frames than Go's defaults (1 MiB windows,
// 16 KiB frames) so one multiplexed connection is not flow-control bound.
func h2Config(streams int) *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          streams,
		MaxReadFrameSize:              256 << 10,
		MaxReceiveBufferPerConnection: 16 << 20,
		MaxReceiveBufferPerStream:     4 << 20,
		SendPingTimeout:               30 * time.Second,
		PingTimeout:                   15 * time.Second,
	}
}

func setDefaults(maxHdr, streams *int, rht, idle, shutdown *time.Duration, now *func() time.Time) {
	if *maxHdr <= 0 {
		*maxHdr = DefaultMaxHeaderBytes
	}
	if *streams <= 0 {
		*streams = DefaultMaxConcurrentStreams
	}
	if *rht <= 0 {
		*rht = DefaultReadHeaderTimeout
	}
	if *idle <= 0 {
		*idle = DefaultIdleTimeout
	}
	if *shutdown <= 0 {
		*shutdown = DefaultShutdownTimeout
	}
	if *now == nil {
		*now = time.Now
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// Addr is the listener's address (useful with port 0).
func (in *Inbound) Addr() net.Addr { return in.ln.Addr() }

// Run serves until ctx is done, then drains in-flight requests for up to
// ShutdownTimeout. It returns nil on a clean shutdown.
func (in *Inbound) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("inbound: Run called twice")
	}
	tl := newTLSListener(in.ln, in.tlsConf, in.cfg.ReadHeaderTimeout, func(remote net.Addr, err error) {
		in.log.Debug("TLS handshake error from " + remote.String() + ": " + err.Error())
	}, func(c net.Conn) { in.h2.ServeConn(context.Background(), c) })
	defer tl.wait()
	defer in.h2.Close() // after a clean drain there is nothing left to close
	defer tl.Close()
	errc := make(chan error, 1)
	go func() { errc <- in.srv.Serve(tl) }()
	watchDone := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watchDone)
		in.watch(watchCtx)
	}()
	defer func() { stopWatch(); <-watchDone }()
	select {
	case err := <-errc:
		return fmt.Errorf("inbound: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.cfg.ShutdownTimeout)
	defer cancel()
	err := drainBoth(sctx, in.srv, in.h2, errc)
	in.app.CloseIdleConnections()
	if err != nil {
		_ = in.srv.Close()
		return fmt.Errorf("inbound: drain: %w", err)
	}
	return nil
}

// watch bumps the generation at each SVID or bundle change, so that every
// open connection re-verifies its peer against the new bundle at its next
// request.
func (in *Inbound) watch(ctx context.Context) {
	for {
		ch := in.cfg.Source.Changed()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		if svid, err := in.cfg.Source.GetX509SVID(); err == nil {
			own := svid.ID.String()
			in.ownID.Store(&own)
		}
		in.gen.Add(1)
	}
}

// ServeHTTP handles one request from a verified peer.
func (in *Inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := in.clk.start(r)
	sw := getStatusWriter(w)
	svc := in.serve(sw, r, start)
	in.cfg.Metrics.request(dirInbound, svc, sw.status(), in.cfg.Now().Sub(start).Seconds())
	putStatusWriter(sw)
}

// serve handles the request; now is the clock reading taken on arrival.
func (in *Inbound) serve(w http.ResponseWriter, r *http.Request, now time.Time) (peerService string) {
	ic, _ := r.Context().Value(inConnKey{}).(*inConn)
	if ic == nil || len(ic.chain) == 0 {
		writeJSONError(w, http.StatusForbidden, "no verified peer")
		return ""
	}
	if ic.scan != nil && r.ProtoMajor == 1 && ic.scan.refuse() {
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusBadRequest, "bad request", "detail", "ambiguous message framing (Content-Length with Transfer-Encoding, or conflicting Content-Length)")
		return ""
	}
	if err := in.checkPeer(ic, ic.chain, now); err != nil {
		// The connection outlived its peer's validity: refuse, and close it
		// (Connection: close is a GOAWAY on HTTP/2) so the caller redials.
		in.log.Info("peer no longer valid", logkey.Error, err.Error())
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusMisdirectedRequest, "peer certificate no longer valid")
		return ic.svc
	}
	path, rawQuery, err := NormalizePath(r.RequestURI)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad request", "detail", err.Error())
		return ic.svc
	}
	var query url.Values // nil, not an empty map, for no query: the policy sees {} either way
	if rawQuery != "" {
		query, err = url.ParseQuery(rawQuery)
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad request", "detail", "invalid query")
		return ic.svc
	}
	teTrailers := stripHopByHop(r.Header)
	delete(r.Header, headerXFCC)

	input := &authz.Input{
		Source:      authz.Source{SPIFFEID: ic.peer.String(), TrustDomain: ic.peer.TrustDomain().Name(), Service: ic.svc},
		Destination: authz.Destination{SPIFFEID: *in.ownID.Load(), Service: in.cfg.Service},
		Request: authz.Request{
			Method:   r.Method,
			Path:     path,
			Query:    query,
			Headers:  in.names.inputHeaders(r.Header),
			Host:     r.Host,
			Protocol: r.Proto,
		},
	}
	if _, set := r.Context().Deadline(); !set && in.cfg.RequestTimeout > 0 {
		// (HTTP/2 requests have it already: see newH2Server.)
		ctx, cancel := context.WithTimeout(r.Context(), in.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	dec := in.cfg.Authorizer.Authorize(r.Context(), input, r.RemoteAddr)
	if !dec.Allow {
		writeJSONError(w, http.StatusForbidden, "forbidden", "decision_id", dec.ID)
		return ic.svc
	}
	if teTrailers {
		r.Header["Te"] = teTrailersValue
	}
	r.Header[headerXFCC] = []string{ic.xfcc}
	if strings.IndexByte(path, '%') < 0 {
		r.URL.Path, r.URL.RawPath = path, ""
	} else {
		p, err := url.PathUnescape(path)
		if err != nil { // cannot happen: NormalizePath emits valid escapes
			writeJSONError(w, http.StatusBadRequest, "bad request", "detail", err.Error())
			return ic.svc
		}
		r.URL.Path, r.URL.RawPath = p, path
	}
	r.URL.RawQuery, r.URL.ForceQuery = rawQuery, false
	in.fwd.ServeHTTP(w, r)
	return ic.svc
}

var teTrailersValue = []string{"trailers"}

// checkPeer computes the connection's peer identity once, and re-verifies the
// chain when the bundle changed since it was last verified; an expired peer
// certificate is refused at every request.
func (in *Inbound) checkPeer(ic *inConn, chain []*x509.Certificate, now time.Time) error {
	ic.once.Do(func() {
		ic.peer, ic.err = svidcheck.Leaf(chain[0])
		if ic.err == nil {
			ic.svc = ServiceOf(ic.peer)
			ic.xfcc = "By=" + *in.ownID.Load() + ";URI=" + ic.peer.String()
		}
	})
	if ic.err != nil {
		return ic.err
	}
	if now.After(chain[0].NotAfter) {
		return fmt.Errorf("check peer %s: certificate expired at %s", ic.peer, chain[0].NotAfter.UTC().Format(time.RFC3339))
	}
	if g := in.gen.Load(); ic.gen.Load() != g {
		id, _, err := x509svid.Verify(chain, in.cfg.Source, x509svid.WithTime(now))
		if err != nil {
			return fmt.Errorf("check peer %s against the current bundle: %w", ic.peer, err)
		}
		if id != ic.peer || id.TrustDomain() != in.td {
			return fmt.Errorf("check peer %s: not a member of %s", id, in.td)
		}
		ic.gen.Store(g)
	}
	return nil
}

// ServiceOf returns the service of a meshguard SPIFFE ID
// (spiffe://TD/svc/NAME), or "" for IDs of another shape.
func ServiceOf(id spiffeid.ID) string {
	name, ok := strings.CutPrefix(id.Path(), "/svc/")
	if !ok || name == "" || strings.IndexByte(name, '/') >= 0 {
		return ""
	}
	return name
}

func (in *Inbound) appError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		writeJSONError(w, http.StatusGatewayTimeout, "app timeout")
		return
	}
	if r.Context().Err() != nil {
		// The caller went away; nothing useful to answer.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	in.log.Warn("forward to app failed", logkey.Addr, in.cfg.App, logkey.Error, err.Error())
	writeJSONError(w, http.StatusBadGateway, "app unavailable")
}
