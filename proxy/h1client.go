package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshguard/meshguard/internal/rawsock"
	"golang.org/x/net/http/httpguts"
)

// h1Client tuning: the same figures the inbound's http.Transport used.
const (
	h1MaxIdle      = 1024
	h1IdleTimeout  = 90 * time.Second
	h1BufSize      = 32 << 10
	h1Max1xx       = 5 // informational responses skipped per request, as net/http
	h1DialTimeout  = 5 * time.Second
	h1TCPKeepAlive = 30 * time.Second
	// h1WriteWait bounds how long the end of a response waits for the
	// request body writer to flush what it has already read, so that the
	// connection is back in the pool before the caller's next request.
	h1WriteWait = 100 * time.Millisecond
)

// errResponseHeaderTooLarge is returned (wrapped) when the app's response
// headers exceed the configured limit; the connection is closed.
var errResponseHeaderTooLarge = errors.New("response headers too large")

// errBodyRevoked is what a request body read returns once RoundTrip has
// taken the body back to retry it on another connection.
var errBodyRevoked = errors.New("request body taken back for a retry")

// errBodyClosed is returned by Read after the response body was closed.
var errBodyClosed = errors.New("read on closed response body")

// h1Client is an HTTP/1.1 http.RoundTripper for one fixed address (the local
// app). Unlike http.Transport it has no per-connection read and write
// goroutines: a request without a body is written and its response read on
// the calling goroutine, and only a request body is written from a second
// goroutine (so an app may answer before reading all of it). Requests are
// written by http.Request.Write, so the framing is net/http's: Host from
// req.Host, no Go User-Agent when the header is present and empty,
// Content-Length or chunked with trailers, no Accept-Encoding. Idle
// connections are kept in a LIFO stack; a reused connection that fails
// before any response byte arrives is retried once on a fresh one when the
// request body was never read.
type h1Client struct {
	addr      string
	maxHeader int64
	clk       startClock
	dialer    net.Dialer

	mu   sync.Mutex
	idle []*h1Conn // LIFO: the most recently used on top
}

// newH1Client returns a client for addr (host:port) whose response headers
// may not exceed maxHeader bytes; clk reads the clock for idle timeouts.
func newH1Client(addr string, maxHeader int, clk startClock) *h1Client {
	return &h1Client{
		addr:      addr,
		maxHeader: int64(maxHeader),
		clk:       clk,
		dialer:    net.Dialer{Timeout: h1DialTimeout, KeepAlive: h1TCPKeepAlive},
	}
}

// h1Conn is one connection with its buffers. It is the bufio.Reader's
// source: reads are counted (a retry is safe only while nothing of the
// response arrived) and capped while headers are read.
type h1Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	limit  int64 // bytes Read may still return; the header limit while reading headers
	nread  int64 // bytes read since the connection was opened
	idleAt time.Time
	// abort unblocks the connection's I/O (a deadline in the past): the
	// cancellation hook of every exchange on it, made once.
	abort func()
}

// Read reads from the connection within the current limit.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errResponseHeaderTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

// CloseIdleConnections closes every idle connection. Connections in use are
// closed or pooled when their exchange ends.
func (cl *h1Client) CloseIdleConnections() {
	cl.mu.Lock()
	idle := cl.idle
	cl.idle = nil
	cl.mu.Unlock()
	for _, c := range idle {
		_ = c.nc.Close()
	}
}

// take pops the most recently used idle connection for a request that
// started at now. When it has been idle longer than the timeout, so has
// every connection under it: all are closed.
func (cl *h1Client) take(now time.Time) *h1Conn {
	cl.mu.Lock()
	n := len(cl.idle)
	if n == 0 {
		cl.mu.Unlock()
		return nil
	}
	c := cl.idle[n-1]
	if now.Sub(c.idleAt) <= h1IdleTimeout {
		cl.idle[n-1] = nil
		cl.idle = cl.idle[:n-1]
		cl.mu.Unlock()
		return c
	}
	stale := cl.idle
	cl.idle = nil
	cl.mu.Unlock()
	for _, c := range stale {
		_ = c.nc.Close()
	}
	return nil
}

// put returns a connection to the pool, or closes it when the pool is full.
func (cl *h1Client) put(c *h1Conn) {
	c.idleAt = cl.clk.now()
	cl.mu.Lock()
	if len(cl.idle) < h1MaxIdle {
		cl.idle = append(cl.idle, c)
		cl.mu.Unlock()
		return
	}
	cl.mu.Unlock()
	_ = c.nc.Close()
}

// dial opens a new connection to the app.
func (cl *h1Client) dial(ctx context.Context) (*h1Conn, error) {
	nc, err := cl.dialer.DialContext(ctx, "tcp", cl.addr)
	if err != nil {
		return nil, cl.fail(ctx, "dial", err)
	}
	nc = rawsock.Wrap(nc)
	c := &h1Conn{nc: nc, limit: math.MaxInt64}
	c.abort = func() { _ = nc.SetDeadline(aLongTimeAgo) }
	c.br = bufio.NewReaderSize(c, h1BufSize)
	c.bw = bufio.NewWriterSize(nc, h1BufSize)
	return c, nil
}

// fail wraps err with what was being done; when ctx is done the error also
// wraps ctx.Err(), which is usually why the I/O failed.
func (cl *h1Client) fail(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("app %s: %s: %w (%w)", cl.addr, what, cerr, err)
	}
	return fmt.Errorf("app %s: %s: %w", cl.addr, what, err)
}

// RoundTrip sends req to the app and returns its response. The response
// body must be read to EOF or closed; the connection is reused after a
// complete exchange.
func (cl *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	if err := cl.check(req); err != nil {
		if hasBody {
			_ = req.Body.Close()
		}
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		if hasBody {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("app %s: before sending: %w", cl.addr, err)
	}
	for attempt := 0; ; attempt++ {
		var c *h1Conn
		if attempt == 0 {
			c = cl.take(cl.clk.start(req))
			if c != nil && hasBody && !idleConnUsable(c.nc) {
				_ = c.nc.Close()
				c = nil
			}
		}
		reused := c != nil
		if c == nil {
			var err error
			if c, err = cl.dial(ctx); err != nil {
				if hasBody {
					_ = req.Body.Close()
				}
				return nil, err
			}
		}
		var body *reqBody
		if hasBody {
			body = &reqBody{rc: req.Body, length: req.ContentLength}
		}
		resp, retry, err := cl.exchange(ctx, c, req, body)
		if err == nil {
			return resp, nil
		}
		if retry && reused && ctx.Err() == nil && (body == nil || body.revoke()) {
			continue
		}
		if body != nil && body.revoke() {
			_ = req.Body.Close() // never read; nobody else will close it
		}
		return nil, err
	}
}

// check refuses requests that http.Transport would refuse before sending.
func (cl *h1Client) check(req *http.Request) error {
	if req.URL == nil {
		return fmt.Errorf("app %s: nil request URL", cl.addr)
	}
	if req.Method != "" && !validMethod(req.Method) {
		return fmt.Errorf("app %s: invalid method %q", cl.addr, req.Method)
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("app %s: invalid header field name %q", cl.addr, k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("app %s: invalid header field value for %q", cl.addr, k)
			}
		}
	}
	return nil
}

// validMethod reports whether m is an HTTP token.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// afterFuncer is a context with an AfterFunc of its own, with
// context.AfterFunc's meaning: h2server's request contexts. Calling it
// directly skips context.AfterFunc's wrapper context and allocations.
type afterFuncer interface {
	AfterFunc(f func()) (stop func() bool)
}

// exchange runs one request on c. On error c is closed and retry reports
// whether the failure happened before any response byte arrived on a
// connection the app may have closed while idle (write error, EOF or reset).
func (cl *h1Client) exchange(ctx context.Context, c *h1Conn, req *http.Request, body *reqBody) (resp *http.Response, retry bool, err error) {
	ex := &h1Exchange{cl: cl, c: c, ctx: ctx, body: body}
	ex.reusable.Store(true)
	if af, ok := ctx.(afterFuncer); ok {
		ex.stop = af.AfterFunc(c.abort)
	} else {
		ex.stop = context.AfterFunc(ctx, c.abort)
	}
	startRead := c.nread
	if body == nil {
		ex.pending.Store(1)
		err := writeBodiless(c.bw, req)
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			ex.finish(false)
			return nil, connGone(err), cl.fail(ctx, "write request", err)
		}
	} else {
		ex.pending.Store(2)
		ex.wrote = make(chan struct{})
		out := new(http.Request)
		*out = *req
		out.Body = body
		go ex.write(out)
	}
	resp, err = cl.readResponse(c, req)
	if err != nil {
		ex.finish(false)
		if werr := ex.writeErr.Load(); werr != nil && c.nread == startRead {
			return nil, connGone(*werr), cl.fail(ctx, "write request", *werr)
		}
		return nil, c.nread == startRead && connGone(err), cl.fail(ctx, "read response", err)
	}
	resp.Request = req
	ex.responded.Store(true)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection now belongs to the response body.
		ex.reusable.Store(false)
		resp.Body = &h1Upgraded{ex: ex}
		return resp, false, nil
	}
	if resp.Close || req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		ex.reusable.Store(false)
	}
	if resp.Body == http.NoBody {
		ex.awaitWriter()
		ex.finish(true)
		return resp, false, nil
	}
	resp.Body = &h1Body{ex: ex, rc: resp.Body}
	return resp, false, nil
}

// writeBodiless writes the head of a request without a body, as
// req.Write would (Host first, an empty User-Agent means none, the header
// values trimmed, Content-Length: 0 for methods that expect a body) but
// without its allocations. check has validated the header fields.
func writeBodiless(bw *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil || !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("invalid Host %q", host)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua, ok := req.Header["User-Agent"]; !ok {
		bw.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 && ua[0] != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(textproto.TrimString(ua[0]))
		bw.WriteString("\r\n")
	}
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	_, err = bw.WriteString("\r\n")
	return err
}

// connGone reports whether err says that the app closed or reset the
// connection: what a keep-alive connection closed while idle looks like.
func connGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// aLongTimeAgo is a deadline in the past: blocked I/O returns at once.
var aLongTimeAgo = time.Unix(1, 0)

// readResponse reads the final response (or a 101), skipping other
// informational ones, with the header size limit applied to each.
func (cl *h1Client) readResponse(c *h1Conn, req *http.Request) (*http.Response, error) {
	for n1xx := 0; ; n1xx++ {
		c.limit = cl.maxHeader
		resp, fast, err := fastResponse(c.br, req, int(cl.maxHeader))
		if !fast && err == nil {
			resp, err = http.ReadResponse(c.br, req)
		}
		c.limit = math.MaxInt64
		if err != nil {
			if errors.Is(err, errResponseHeaderTooLarge) {
				return nil, fmt.Errorf("%w (limit %d bytes)", errResponseHeaderTooLarge, cl.maxHeader)
			}
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if n1xx >= h1Max1xx {
			return nil, fmt.Errorf("more than %d informational responses", h1Max1xx)
		}
	}
}

// h1Exchange is one request/response on a connection. Its two sides (the
// response reader and, for requests with a body, the body writer) each call
// finish once; the last one stops the cancellation hook, closes the request
// body and pools the connection if both ended cleanly, or closes it.
type h1Exchange struct {
	cl       *h1Client
	c        *h1Conn
	ctx      context.Context
	body     *reqBody
	stop     func() bool
	pending  atomic.Int32
	reusable atomic.Bool
	writeErr atomic.Pointer[error]
	wrote    chan struct{} // closed when the body writer ends
	// responded: RoundTrip returned a response, so a request body that
	// was never read is no longer kept for a retry and is closed here.
	responded atomic.Bool
}

// write is the body writer goroutine.
func (ex *h1Exchange) write(out *http.Request) {
	err := out.Write(ex.c.bw)
	if err == nil {
		err = ex.c.bw.Flush()
	}
	if err != nil {
		ex.writeErr.Store(&err)
		if ex.body.readErr() {
			// The caller's body broke: the request cannot complete, so
			// unblock the reader rather than wait for the app.
			_ = ex.c.nc.Close()
		}
	}
	ex.finish(err == nil)
	close(ex.wrote) // after finish: a reader waiting in awaitWriter ends last
}

// awaitWriter is called at the end of the response. When the body writer
// has read all of the caller's body it only has a flush left: wait for it
// (briefly), so the connection is pooled before the caller moves on. A
// writer still reading the caller's body (the app answered early) is not
// waited for; it pools or closes the connection itself when it ends.
func (ex *h1Exchange) awaitWriter() {
	if ex.wrote == nil || !ex.body.eof.Load() {
		return
	}
	select {
	case <-ex.wrote:
		return
	default:
	}
	t := time.NewTimer(h1WriteWait)
	select {
	case <-ex.wrote:
	case <-t.C:
	case <-ex.ctx.Done():
	}
	t.Stop()
}

// finish ends one side of the exchange. A failed side closes the connection
// at once, which also unblocks the other side.
func (ex *h1Exchange) finish(ok bool) {
	if !ok {
		ex.reusable.Store(false)
		_ = ex.c.nc.Close()
	}
	if ex.pending.Add(-1) > 0 {
		return
	}
	stopped := ex.stop()
	if ex.body != nil && (ex.body.used() || (ex.responded.Load() && ex.body.revoke())) {
		_ = ex.body.rc.Close()
	}
	// A connection is pooled only if the cancellation hook never ran, so
	// its deadline is still unset.
	if ex.reusable.Load() && stopped && ex.c.br.Buffered() == 0 {
		ex.cl.put(ex.c)
		return
	}
	_ = ex.c.nc.Close()
}

// reqBody wraps the caller's request body for one attempt. Its first Read
// claims the body for that attempt; RoundTrip may instead revoke it (only
// while it was never read) to retry on another connection. Close is left to
// the exchange, so that http.Request.Write does not close a body that might
// be retried.
type reqBody struct {
	rc    io.ReadCloser
	state atomic.Int32 // bodyFresh, bodyUsed or bodyRevoked
	err   atomic.Pointer[error]
	// The caller's body was read to its end (EOF, or Content-Length
	// bytes: net/http may hand those to the socket before it reads EOF).
	eof    atomic.Bool
	length int64 // req.ContentLength
	nread  int64 // owned by the writer goroutine
}

const (
	bodyFresh = iota
	bodyUsed
	bodyRevoked
)

// Read reads the caller's body unless it was revoked.
func (b *reqBody) Read(p []byte) (int, error) {
	if b.state.Load() != bodyUsed && !b.state.CompareAndSwap(bodyFresh, bodyUsed) {
		return 0, errBodyRevoked
	}
	n, err := b.rc.Read(p)
	b.nread += int64(n)
	if err == io.EOF || (b.length > 0 && b.nread >= b.length) {
		b.eof.Store(true)
	}
	if err != nil && err != io.EOF {
		b.err.Store(&err)
	}
	return n, err
}

// Close does nothing: see reqBody.
func (b *reqBody) Close() error { return nil }

// revoke takes back a body that was never read; it reports success.
func (b *reqBody) revoke() bool {
	return b.state.CompareAndSwap(bodyFresh, bodyRevoked) || b.state.Load() == bodyRevoked
}

// used reports whether this attempt read the body (and so must close it).
func (b *reqBody) used() bool { return b.state.Load() == bodyUsed }

// readErr reports whether reading the caller's body failed.
func (b *reqBody) readErr() bool { return b.err.Load() != nil }

// h1Body is the response body. At EOF the response side of the exchange
// ends cleanly (trailers are in resp.Trailer by then); Close before EOF
// ends it with the connection closed.
type h1Body struct {
	ex   *h1Exchange
	rc   io.ReadCloser
	done bool
	err  error
}

// Read reads the response body.
func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		b.done = true
		b.ex.awaitWriter()
		b.ex.finish(true)
	default:
		b.done = true
		b.err = b.ex.cl.fail(b.ex.ctx, "read response body", err)
		b.ex.finish(false)
		err = b.err
	}
	return n, err
}

// Close ends the response; before EOF it closes the connection.
func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done, b.err = true, errBodyClosed
	b.ex.finish(false)
	return nil
}

// h1Upgraded is the body of a 101 response: the raw connection, read
// through the buffered reader, written directly. Close closes it.
type h1Upgraded struct {
	ex   *h1Exchange
	once sync.Once
}

// Read reads from the switched connection.
func (u *h1Upgraded) Read(p []byte) (int, error) { return u.ex.c.br.Read(p) }

// Write writes to the switched connection.
func (u *h1Upgraded) Write(p []byte) (int, error) { return u.ex.c.nc.Write(p) }

// Close closes the switched connection.
func (u *h1Upgraded) Close() error {
	u.once.Do(func() { u.ex.finish(false) })
	return nil
}
