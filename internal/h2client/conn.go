// Package h2client is meshguard's HTTP/2 client connection for the data
// plane's hot path: the one pooled mTLS connection from an agent's
// outbound side to each peer endpoint.
//
// Why not x/net/http2's ClientConn: it starts a goroutine per request to
// write it, and writes and flushes each request's frames under its write
// lock, one syscall each; under 64 concurrent streams the hand-offs and
// syscalls cost more CPU than the proxying. Here the caller's goroutine
// encodes its HEADERS (and a request without a body is done writing after
// that), the frames of concurrent streams leave together through
// internal/h2write, and one goroutine reads the connection and hands
// response headers and data to the waiting streams. A request body is sent
// by a goroutine of its own.
//
// What a connection pool needs is here too: Reserve (a stream slot for a
// request about to be sent, as x/net's ReserveNewRequest), State,
// SetDoNotReuse, a graceful Shutdown that lets in-flight streams finish,
// keepalive PINGs, an idle timeout, and ErrNotSent for requests the server
// provably never processed (refused before they started, above a GOAWAY's
// last stream ID, or REFUSED_STREAM), which are safe to retry even with a
// body.
package h2client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/meshguard/meshguard/internal/h2flow"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/internal/h2meta"
	"github.com/meshguard/meshguard/internal/h2write"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultMaxReadFrameSize = 256 << 10
	DefaultStreamWindow     = 4 << 20
	DefaultConnWindow       = 1 << 30
	DefaultPingInterval     = 30 * time.Second
	DefaultPingTimeout      = 15 * time.Second
)

// Config configures a connection. Zero values take the defaults above.
type Config struct {
	// MaxHeaderBytes bounds a response's header list
	// (SETTINGS_MAX_HEADER_LIST_SIZE); a larger one fails its request.
	MaxHeaderBytes int
	// MaxReadFrameSize is the largest frame accepted (SETTINGS_MAX_FRAME_SIZE).
	MaxReadFrameSize uint32
	// StreamWindow and ConnWindow are the receive windows: how much
	// response body the server may send ahead per stream and in all.
	StreamWindow int32
	ConnWindow   int32
	// PingInterval is how long the connection may stay silent before a
	// PING is sent; PingTimeout is how long its answer may take before
	// the connection is closed.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// IdleTimeout closes the connection after this long without a stream.
	// Zero: never.
	IdleTimeout time.Duration
}

// ErrNotSent is wrapped by errors for requests the server did not
// process: safe to send again, to this server or another.
var ErrNotSent = errors.New("request not sent")

var (
	errClosed      = errors.New("h2client: connection closed")
	errPingTimeout = errors.New("h2client: no answer to PING")
	errIdle        = errors.New("h2client: idle connection closed")
	errBodyClosed  = errors.New("h2client: read on closed response body")
)

// initialMaxStreams is assumed until the server's SETTINGS say otherwise.
const initialMaxStreams = 100

// State describes a connection for a pool.
type State struct {
	Closed  bool // no request can use it any more
	Closing bool // no new request may start on it (GOAWAY, SetDoNotReuse, Shutdown)
	Streams int  // open streams
}

// Conn is one HTTP/2 client connection.
type Conn struct {
	nc  net.Conn
	cfg Config
	br  *bufio.Reader
	fr  *http2.Framer  // read side (readLoop only)
	hr  *h2meta.Reader // fr's frames with header blocks decoded

	names map[string]string // wire name → canonical key (readLoop only)

	// The write side: w's lock ("wmu") guards the fields up to mu.
	w     *h2write.Writer
	hbuf  bytes.Buffer
	henc  *h2meta.Encoder
	lower map[string]string // header key → wire name
	// nextID is the next stream ID: written under wmu (IDs go out in
	// order), read anywhere.
	nextID atomic.Uint32

	lastRead atomic.Int64 // unix nanoseconds of the last read that returned data
	maxFrame atomic.Uint32

	mu          sync.Mutex
	streams     map[uint32]*stream
	reserved    int
	maxStreams  int
	peerInitWin int64       // the server's SETTINGS_INITIAL_WINDOW_SIZE
	send        h2flow.Send // the connection's send window
	recv        h2flow.Recv // the connection's receive window
	goAway      bool
	goAwayLast  uint32
	doNotReuse  bool
	closing     bool // Shutdown
	closed      bool
	drained     chan struct{} // closed when a closing connection has no stream left
	idleTimer   *time.Timer
	pingTimer   *time.Timer
	pingAt      int64 // unix nanoseconds of an unanswered PING, 0 = none
	readDone    chan struct{}
}

// New starts HTTP/2 on nc (a connection that negotiated h2): it sends the
// preface and SETTINGS and starts the goroutine that reads nc.
func New(nc net.Conn, cfg Config) (*Conn, error) {
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = DefaultMaxReadFrameSize
	}
	cfg.MaxReadFrameSize = min(max(cfg.MaxReadFrameSize, 16384), 1<<24-1)
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow <= 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	c := &Conn{
		nc:          nc,
		cfg:         cfg,
		names:       make(map[string]string, 32),
		lower:       make(map[string]string, 32),
		streams:     make(map[uint32]*stream),
		maxStreams:  initialMaxStreams,
		peerInitWin: 65535,
		send:        h2flow.NewSend(),
		recv:        h2flow.NewRecv(int64(cfg.ConnWindow), 2),
		readDone:    make(chan struct{}),
	}
	c.br = bufio.NewReaderSize(h2meta.ActivityReader{R: nc, Last: &c.lastRead}, 64<<10)
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetMaxReadFrameSize(cfg.MaxReadFrameSize)
	c.fr.SetReuseFrames()
	c.hr = h2meta.New(c.fr, uint32(cfg.MaxHeaderBytes))
	c.w = h2write.New(nc)
	c.henc = h2meta.NewEncoder(&c.hbuf)
	c.maxFrame.Store(16384)
	c.nextID.Store(1)
	c.lastRead.Store(time.Now().UnixNano())

	c.w.Lock()
	err := c.writePrefaceLocked()
	if ferr := c.w.UnlockFlush(); err == nil {
		err = ferr
	}
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("h2client: send preface: %w", err)
	}
	c.mu.Lock()
	c.pingTimer = time.AfterFunc(cfg.PingInterval, c.pingCheck)
	c.armIdleLocked()
	c.mu.Unlock()
	go c.readLoop()
	return c, nil
}

func (c *Conn) writePrefaceLocked() error {
	c.w.WriteRaw([]byte(http2.ClientPreface))
	fr := c.w.Framer
	err := fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: c.cfg.MaxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.cfg.MaxHeaderBytes)},
	)
	if err == nil && c.cfg.ConnWindow > 65535 {
		err = fr.WriteWindowUpdate(0, uint32(c.cfg.ConnWindow-65535))
	}
	return err
}

// Reserve reserves a stream for a request about to be sent with
// RoundTrip (which takes one reservation if there is any, whoever made
// it, as x/net's ReserveNewRequest does), and reports false when the connection cannot take one (it is
// closing, or all the streams the server allows are in use).
func (c *Conn) Reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.usableLocked() || len(c.streams)+c.reserved >= c.maxStreams {
		return false
	}
	c.reserved++
	return true
}

func (c *Conn) usableLocked() bool {
	return !c.closed && !c.closing && !c.goAway && !c.doNotReuse && c.nextID.Load() < 1<<31
}

// State reports whether the connection is closed or closing and how many
// streams are open.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{Closed: c.closed, Closing: !c.closed && !c.usableLocked(), Streams: len(c.streams)}
}

// SetDoNotReuse marks the connection as accepting no new requests; it
// closes once its streams are done.
func (c *Conn) SetDoNotReuse() {
	c.mu.Lock()
	c.doNotReuse = true
	idle := len(c.streams) == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.closeConn(errClosed, true)
	}
}

// Shutdown stops new requests, sends GOAWAY, waits until the open streams
// are done or ctx ends (then it returns ctx's error and leaves the
// connection open: call Close), and closes the connection.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	if c.drained == nil {
		c.drained = make(chan struct{})
		if len(c.streams) == 0 {
			close(c.drained)
		}
	}
	drained := c.drained
	c.mu.Unlock()
	c.w.Lock()
	_ = c.w.Framer.WriteGoAway(0, http2.ErrCodeNo, nil)
	_ = c.w.UnlockFlush()
	select {
	case <-drained:
		c.closeConn(errClosed, true)
		return nil
	case <-c.readDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the connection at once; open requests fail.
func (c *Conn) Close() error {
	c.closeConn(errClosed, false)
	return nil
}

// closeConn fails every open stream with err and closes nc; graceful
// first sends what is queued (a GOAWAY), for at most a second.
func (c *Conn) closeConn(err error, graceful bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for _, st := range c.streams {
		st.failLocked(err)
	}
	clear(c.streams)
	for _, t := range []*time.Timer{c.idleTimer, c.pingTimer} {
		if t != nil {
			t.Stop()
		}
	}
	if c.drained != nil {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
	c.mu.Unlock()
	if graceful {
		c.w.Lock()
		_ = c.w.Framer.WriteGoAway(0, http2.ErrCodeNo, nil)
		c.w.Unlock()
		c.w.Drain(time.Second)
	}
	_ = c.nc.Close()
}

// removeLocked forgets a finished stream.
func (c *Conn) removeLocked(st *stream) {
	if st.removed {
		return
	}
	st.removed = true
	delete(c.streams, st.id)
	if len(c.streams) > 0 {
		return
	}
	if c.drained != nil {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
	if c.doNotReuse || c.goAway {
		go c.closeConn(errClosed, true)
		return
	}
	c.armIdleLocked()
}

func (c *Conn) armIdleLocked() {
	if c.cfg.IdleTimeout <= 0 || c.closed {
		return
	}
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(c.cfg.IdleTimeout, c.onIdle)
		return
	}
	c.idleTimer.Reset(c.cfg.IdleTimeout)
}

func (c *Conn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && c.reserved == 0 && !c.closed
	if idle {
		c.closing = true
	}
	c.mu.Unlock()
	if idle {
		c.closeConn(errIdle, true)
	}
}

// pingCheck sends a PING after PingInterval of silence and closes the
// connection when the answer does not come within PingTimeout.
func (c *Conn) pingCheck() {
	now := time.Now().UnixNano()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.pingAt != 0 {
		if time.Duration(now-c.pingAt) >= c.cfg.PingTimeout {
			c.mu.Unlock()
			c.closeConn(errPingTimeout, false)
			return
		}
		c.pingTimer.Reset(c.cfg.PingTimeout - time.Duration(now-c.pingAt))
		c.mu.Unlock()
		return
	}
	if silent := time.Duration(now - c.lastRead.Load()); silent < c.cfg.PingInterval {
		c.pingTimer.Reset(c.cfg.PingInterval - silent)
		c.mu.Unlock()
		return
	}
	c.pingAt = now
	c.pingTimer.Reset(c.cfg.PingTimeout)
	c.mu.Unlock()
	c.w.Lock()
	_ = c.w.Framer.WritePing(false, [8]byte{'m', 'e', 's', 'h', 'p', 'i', 'n', 'g'})
	c.w.UnlockKick()
}

// notSent wraps ErrNotSent with why.
func notSent(why string) error { return fmt.Errorf("h2client: %w: %s", ErrNotSent, why) }

// validateRequest checks what would otherwise corrupt the connection's
// HPACK state half-way through encoding.
func validateRequest(req *http.Request) (host string, err error) {
	if req.URL == nil {
		return "", errors.New("h2client: request without URL")
	}
	if req.Method == http.MethodConnect {
		return "", errors.New("h2client: CONNECT is not supported")
	}
	if req.Method != "" && !validMethod(req.Method) {
		return "", fmt.Errorf("h2client: invalid method %q", req.Method)
	}
	host = req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host, err = httpguts.PunycodeHostPort(host); err != nil {
		return "", fmt.Errorf("h2client: invalid host: %w", err)
	}
	if !httpguts.ValidHostHeader(host) {
		return "", fmt.Errorf("h2client: invalid host %q", host)
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return "", fmt.Errorf("h2client: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return "", fmt.Errorf("h2client: invalid value for header field %q", k)
			}
		}
	}
	for k := range req.Trailer {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) {
			return "", fmt.Errorf("h2client: invalid trailer %q", k)
		}
	}
	return host, nil
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// dropped headers: connection-specific (RFC 9113 §8.2.2) or sent as pseudo-headers.
func dropHeader(k string) bool {
	switch k {
	case "Host", "Connection", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Keep-Alive", "Content-Length", "Trailer":
		return true
	}
	return false
}

// wire returns the lowercase wire name of a header key (under wmu).
func (c *Conn) wire(k string) string {
	if l, ok := c.lower[k]; ok {
		return l
	}
	l := strings.ToLower(k)
	if len(c.lower) < 1000 {
		c.lower[k] = l
	}
	return l
}

// encodeHeadersLocked encodes the request's header block into hbuf.
func (c *Conn) encodeHeadersLocked(req *http.Request, host string, contentLength int64) {
	c.hbuf.Reset()
	e := c.henc
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	path := req.URL.RequestURI()
	_ = e.WriteField(hpack.HeaderField{Name: ":method", Value: method})
	_ = e.WriteField(hpack.HeaderField{Name: ":scheme", Value: schemeOf(req)})
	_ = e.WriteField(hpack.HeaderField{Name: ":authority", Value: host})
	_ = e.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for k, vv := range req.Header {
		if dropHeader(k) {
			continue
		}
		if k == "Te" {
			// Only "trailers" may be sent (RFC 9113 §8.2.2).
			for _, v := range vv {
				if strings.EqualFold(strings.TrimSpace(v), "trailers") {
					_ = e.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
					break
				}
			}
			continue
		}
		name := c.wire(k)
		for _, v := range vv {
			if v == "" && k == "User-Agent" {
				continue // an empty User-Agent means none (net/http's convention)
			}
			_ = e.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: k == "Authorization" || k == "Proxy-Authorization" || k == "Cookie"})
		}
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, strings.ToLower(k))
		}
		_ = e.WriteField(hpack.HeaderField{Name: "trailer", Value: strings.Join(keys, ",")})
	}
	if contentLength > 0 || (contentLength == 0 && (method == "POST" || method == "PUT" || method == "PATCH")) {
		_ = e.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(contentLength, 10)})
	}
}

func schemeOf(req *http.Request) string {
	if req.URL.Scheme != "" {
		return req.URL.Scheme
	}
	return "https"
}

// writeBlockLocked writes a header block as HEADERS and as many
// CONTINUATION frames as the server's frame size needs.
func (c *Conn) writeBlockLocked(id uint32, block []byte, end bool) error {
	maxF := int(c.maxFrame.Load())
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > maxF {
			chunk = chunk[:maxF]
		}
		block = block[len(chunk):]
		var err error
		if first {
			err = c.w.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.w.Framer.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
