package h2server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxConcurrentStreams = 1000
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxReadFrameSize     = 256 << 10
	DefaultStreamWindow         = 4 << 20
	DefaultConnWindow           = 16 << 20
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultPrefaceTimeout       = 10 * time.Second
	DefaultPingInterval         = 30 * time.Second
	DefaultPingTimeout          = 15 * time.Second
)

// Config configures a Server. Zero values take the defaults above.
type Config struct {
	// Handler serves every request. Required.
	Handler http.Handler
	// MaxConcurrentStreams is advertised to clients and also bounds the
	// handlers running at once on one connection.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (SETTINGS_MAX_HEADER_LIST_SIZE);
	// larger ones are answered 431.
	MaxHeaderBytes int
	// MaxReadFrameSize is the largest frame accepted (SETTINGS_MAX_FRAME_SIZE).
	MaxReadFrameSize uint32
	// StreamWindow and ConnWindow are the receive flow-control windows: how
	// much request body a client may send ahead per stream and per connection.
	StreamWindow int32
	ConnWindow   int32
	// RequestTimeout, when positive, is the deadline of every request's
	// context (one context per stream, where a handler's own WithTimeout
	// would add a second).
	RequestTimeout time.Duration
	// IdleTimeout closes (GOAWAY) a connection that had no open stream for this long.
	IdleTimeout time.Duration
	// PrefaceTimeout bounds the wait for the client preface and its SETTINGS.
	PrefaceTimeout time.Duration
	// PingInterval is how long a connection may stay silent before the
	// server sends a PING; PingTimeout is how long the answer may take
	// before the connection is closed.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// GoAwayGrace is how long a connection stays open after its graceful
	// GOAWAY once no stream is left (default 1s, as net/http): a request
	// the client sent before reading the GOAWAY is then refused with
	// REFUSED_STREAM, safe to retry, instead of lost to a reset.
	GoAwayGrace time.Duration
	// ConnContext, when set, derives each connection's base context (the
	// request contexts descend from it).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// Logger gets protocol errors at debug level. Nil: discarded.
	Logger *slog.Logger
}

// Server serves HTTP/2 on connections handed to ServeConn.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	idle     chan struct{} // closed and replaced when a conn ends during Shutdown

	handlers *handlerPool  // idle handler goroutines
	stop     chan struct{} // closed by Close and by a finished Shutdown (with handlers.close): the pool's janitor and idle handler goroutines end
	stopOnce sync.Once
}

func (s *Server) stopIdle() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.handlers.close()
	})
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("h2server: Handler is required")
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = DefaultMaxReadFrameSize
	}
	if cfg.MaxReadFrameSize < 16384 || cfg.MaxReadFrameSize > 1<<24-1 {
		return nil, fmt.Errorf("h2server: MaxReadFrameSize %d outside [16384, 16777215]", cfg.MaxReadFrameSize)
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow <= 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.ConnWindow < 65535 {
		cfg.ConnWindow = 65535
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.PrefaceTimeout <= 0 {
		cfg.PrefaceTimeout = DefaultPrefaceTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.GoAwayGrace <= 0 {
		cfg.GoAwayGrace = time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := make(chan struct{})
	return &Server{cfg: cfg, log: log, conns: make(map[*conn]struct{}), idle: make(chan struct{}),
		handlers: &handlerPool{every: idleHandler, stop: stop}, stop: stop}, nil
}

// ServeConn serves one connection until it ends, then closes it. The client
// preface must not have been consumed (a caller that peeked it passes a
// conn whose Read returns the peeked bytes first). ServeConn returns after
// the connection's handlers have returned.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	base := ctx
	if s.cfg.ConnContext != nil {
		base = s.cfg.ConnContext(ctx, nc)
	}
	c := newConn(s, nc)
	// Set before c is registered: Close and Shutdown may reach c (closeNow
	// reads c.cancel) before serve runs.
	c.ctx, c.cancel = context.WithCancel(base)
	// Request contexts descend from a parent that carries the connection's
	// values but not its cancellation: a context.WithCancel per stream
	// under the connection's own context would register every stream in
	// that context's child set, one mutex for all the connection's streams.
	// closeNow cancels the open streams itself, and ends the connection
	// when base is canceled.
	c.streamBase = context.WithoutCancel(c.ctx)
	stopWatch := context.AfterFunc(c.ctx, func() { c.closeNow(context.Cause(c.ctx)) })
	defer stopWatch()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		c.cancel()
		_ = nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.shutdown {
			close(s.idle)
			s.idle = make(chan struct{})
		}
		s.mu.Unlock()
	}()
	c.serve()
}

// Shutdown stops new streams on every connection (GOAWAY), lets the open
// ones finish, and returns when every connection has ended or ctx is done,
// in which case the remaining connections are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	// Sending GOAWAY takes the conn's write lock, which a handler blocked
	// writing to a peer that stopped reading may hold indefinitely: send it
	// on the side, so that ctx still bounds Shutdown (Close then unblocks
	// those writes), and never under s.mu, which ServeConn needs to finish.
	for _, c := range cs {
		go c.startGracefulShutdown()
	}
	for {
		s.mu.Lock()
		n, idle := len(s.conns), s.idle
		s.mu.Unlock()
		if n == 0 {
			s.stopIdle()
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.stopIdle()
	s.mu.Lock()
	s.shutdown = true
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.closeNow(errServerClosed)
	}
}

var (
	errServerClosed = errors.New("h2server: server closed")
	errStreamClosed = errors.New("h2server: stream closed")
	errConnClosed   = errors.New("h2server: connection closed")
)

// prefacedConn reads a peeked preface before the rest of a connection.
type prefacedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefacedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// WithPeeked returns a conn whose Read first returns what br buffered from
// nc (for callers that peeked at the preface to choose a protocol).
func WithPeeked(nc net.Conn, br *bufio.Reader) net.Conn {
	if br.Buffered() == 0 {
		return nc
	}
	return &prefacedConn{Conn: nc, r: br}
}

// IsPreface reports whether b starts like the HTTP/2 client preface (at
// least the first len(b) bytes of it match).
func IsPreface(b []byte) bool {
	p := http2.ClientPreface
	if len(b) > len(p) {
		b = b[:len(p)]
	}
	return len(b) > 0 && string(b) == p[:len(b)]
}

// readPreface consumes the client preface.
func readPreface(r io.Reader) error {
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return fmt.Errorf("read client preface: %w", err)
	}
	if string(buf[:]) != http2.ClientPreface {
		return connError{http2.ErrCodeProtocol, "bad client preface"}
	}
	return nil
}
