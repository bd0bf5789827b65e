package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/meshguard/meshguard/internal/h2server"
)

// PublicConfig configures a listener for clients outside the mesh (the
// edge): HTTP/1.1 and HTTP/2 over TLS, or HTTP/1.1 and h2c in plaintext.
type PublicConfig struct {
	Listener             net.Listener // required
	TLS                  *tls.Config  // nil: plaintext; NextProtos is set to h2, http/1.1
	Handler              http.Handler // required
	MaxHeaderBytes       int          // default DefaultMaxHeaderBytes
	MaxConcurrentStreams int          // default DefaultMaxConcurrentStreams
	ReadHeaderTimeout    time.Duration
	ReadTimeout          time.Duration // HTTP/1.1 whole-request read deadline; 0 = none
	IdleTimeout          time.Duration
	ShutdownTimeout      time.Duration
	// RequestTimeout, when positive, is the deadline of every HTTP/2
	// request's context (Outbound then adds no timeout of its own).
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Public serves outside clients with the same connection handling as the
// mesh listeners: TLS handshakes (or the h2c preface check) happen in the
// listener, HTTP/2 goes to h2server and HTTP/1.1 to net/http. Handlers find
// the TLS state with TLSState, not r.TLS.
type Public struct {
	cfg PublicConfig
	log *slog.Logger
	srv *http.Server
	h2  *h2server.Server
}

type tlsStateKey struct{}

// TLSState returns the TLS connection state of a request served by Public,
// or nil for plaintext.
func TLSState(r *http.Request) *tls.ConnectionState {
	if r.TLS != nil {
		return r.TLS
	}
	cs, _ := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
	return cs
}

// NewPublic validates cfg.
func NewPublic(cfg PublicConfig) (*Public, error) {
	if cfg.Listener == nil || cfg.Handler == nil {
		return nil, errors.New("new public listener: Listener and Handler are required")
	}
	now := time.Now
	setDefaults(&cfg.MaxHeaderBytes, &cfg.MaxConcurrentStreams, &cfg.ReadHeaderTimeout, &cfg.IdleTimeout, &cfg.ShutdownTimeout, &now)
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
		cfg.TLS.NextProtos = []string{"h2", "http/1.1"}
	}
	p := &Public{cfg: cfg, log: orDiscard(cfg.Logger).With("component", "public")}
	connContext := func(ctx context.Context, c net.Conn) context.Context {
		if fc, ok := c.(*framingConn); ok && fc.tls != nil {
			cs := fc.tls.ConnectionState()
			return context.WithValue(ctx, tlsStateKey{}, &cs)
		}
		return ctx
	}
	p.srv = &http.Server{
		Handler:           cfg.Handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
		ConnContext:       connContext,
	}
	p.srv.Protocols.SetHTTP1(true)
	var err error
	p.h2, err = newH2Server(cfg.Handler, false, cfg.MaxConcurrentStreams, cfg.MaxHeaderBytes, cfg.IdleTimeout, cfg.ReadHeaderTimeout, cfg.RequestTimeout, connContext, p.log)
	if err != nil {
		return nil, fmt.Errorf("new public listener: %w", err)
	}
	return p, nil
}

// Run serves until ctx is done, then drains for up to ShutdownTimeout.
func (p *Public) Run(ctx context.Context) error {
	onErr := func(remote net.Addr, err error) {
		p.log.Debug("connection from " + remote.String() + ": " + err.Error())
	}
	serveH2 := func(c net.Conn) { p.h2.ServeConn(context.Background(), c) }
	var l *connListener
	if p.cfg.TLS != nil {
		l = newTLSListener(p.cfg.Listener, p.cfg.TLS, p.cfg.ReadHeaderTimeout, onErr, serveH2)
	} else {
		l = newPlainListener(p.cfg.Listener, p.cfg.ReadHeaderTimeout, onErr, serveH2)
	}
	defer l.wait()
	defer p.h2.Close()
	defer l.Close()
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("public listener: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
	defer cancel()
	if err := drainBoth(sctx, p.srv, p.h2, errc); err != nil {
		_ = p.srv.Close()
		return fmt.Errorf("public listener: drain: %w", err)
	}
	return nil
}

// newH2Server is the HTTP/2 side of a listener. Mesh listeners get
// meshguard's large windows; a public one gets net/http's (1 MiB per
// connection): outside clients should not park 16 MiB each in the edge.
func newH2Server(h http.Handler, mesh bool, streams, maxHeader int, idle, preface, requestTimeout time.Duration, connContext func(context.Context, net.Conn) context.Context, log *slog.Logger) (*h2server.Server, error) {
	frame, streamWin, connWin := uint32(h2MaxFrame), int32(h2StreamWindow), int32(h2ConnWindow)
	if !mesh {
		frame, streamWin, connWin = 16<<10, 1<<20, 1<<20
	}
	return h2server.New(h2server.Config{
		Handler:              h,
		MaxConcurrentStreams: uint32(streams),
		MaxHeaderBytes:       maxHeader,
		MaxReadFrameSize:     frame,
		StreamWindow:         streamWin,
		ConnWindow:           connWin,
		IdleTimeout:          idle,
		PrefaceTimeout:       preface,
		RequestTimeout:       requestTimeout,
		ConnContext:          connContext,
		Logger:               log,
	})
}

// drainBoth shuts the HTTP/1.1 and HTTP/2 servers of a listener down in
// parallel within ctx; errc is the HTTP/1.1 server's Serve result.
func drainBoth(ctx context.Context, srv *http.Server, h2 *h2server.Server, errc <-chan error) error {
	h2done := make(chan error, 1)
	go func() { h2done <- h2.Shutdown(ctx) }()
	err := srv.Shutdown(ctx)
	<-errc
	return errors.Join(err, <-h2done)
}
