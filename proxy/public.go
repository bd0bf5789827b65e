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
	Logger               *slog.Logger
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
	p.h2, err = h2server.New(h2server.Config{
		Handler:              cfg.Handler,
		MaxConcurrentStreams: uint32(cfg.MaxConcurrentStreams),
		MaxHeaderBytes:       cfg.MaxHeaderBytes,
		IdleTimeout:          cfg.IdleTimeout,
		PrefaceTimeout:       cfg.ReadHeaderTimeout,
		ConnContext:          connContext,
		Logger:               p.log,
	})
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
	h2done := make(chan error, 1)
	go func() { h2done <- p.h2.Shutdown(sctx) }()
	err := p.srv.Shutdown(sctx)
	<-errc
	if err = errors.Join(err, <-h2done); err != nil {
		_ = p.srv.Close()
		return fmt.Errorf("public listener: drain: %w", err)
	}
	return nil
}
