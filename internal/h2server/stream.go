package h2server

import (
	"context"
	"errors"
	"fmt"
	"github.com/meshguard/meshguard/internal/h2flow"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response.
type stream struct {
	c       *conn
	id      uint32
	ctx     streamCtx // the request's context
	req     *http.Request
	handler http.Handler
	rw      responseWriter
	body    requestBody
	trailer [][2]string // request trailers, copied into req.Trailer at EOF

	// Guarded by c.mu.
	inMap        bool // in c.streams
	remoteClosed bool // END_STREAM received
	localClosed  bool // END_STREAM sent
	reset        bool
	peerReset    bool // reset by the client's RST_STREAM
	bodyClosed   bool
	recv         h2flow.Recv       // what the client may still send on this stream
	send         h2flow.SendStream // what we may still send on it
	declared     int64             // content-length, -1 = none
	received     int64
	buf          []byte // request body received, not yet read
	off          int
	bodyErr      error // io.EOF once the body is complete
	needContinue bool
	responded    bool // response HEADERS written: set by the handler's goroutine under c.w's lock, read by others only under it

	// Made (under c.mu) by the first goroutine that waits on them; a
	// notification with no waiter yet (nil channel) is a no-op, and the
	// waiter checks the state under c.mu before it waits.
	rnotify chan struct{} // body data or end arrived
}

// newRequest builds st.req from a HEADERS frame, or returns the error code
// of a malformed request (RFC 9113 §8.1.1).
func (c *conn) newRequest(st *stream, f *http2.MetaHeadersFrame) http2.ErrCode {
	method := f.PseudoValue("method")
	path := f.PseudoValue("path")
	scheme := f.PseudoValue("scheme")
	authority := f.PseudoValue("authority")
	if f.PseudoValue("protocol") != "" {
		return http2.ErrCodeProtocol // no extended CONNECT
	}
	var u *url.URL
	requestURI := path
	if method == http.MethodConnect {
		if path != "" || scheme != "" || authority == "" {
			return http2.ErrCodeProtocol
		}
		u = &url.URL{Host: authority}
		requestURI = authority
	} else {
		if method == "" || path == "" || !validScheme(scheme) {
			return http2.ErrCodeProtocol
		}
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return http2.ErrCodeProtocol
		}
	}
	fields := f.RegularFields()
	h := make(http.Header, len(fields))
	// One backing array for the values (as net/textproto does): a key's
	// first value is a one-element, capacity-one slice of it, so a second
	// value appends into a new array instead of over a neighbour's.
	vals := make([]string, len(fields))
	var cookies []string
	var host string
	declared := int64(-1)
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return http2.ErrCodeProtocol
		case "te":
			if hf.Value != "trailers" {
				return http2.ErrCodeProtocol
			}
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case "host":
			// Two hosts, or a Host naming another entity than
			// :authority (RFC 9113 §8.3.1): which one a hop or a policy
			// reads must never be in doubt.
			if host != "" && !strings.EqualFold(host, hf.Value) ||
				authority != "" && !strings.EqualFold(authority, hf.Value) {
				return http2.ErrCodeProtocol
			}
			if host == "" {
				host = hf.Value
			}
			continue
		case "content-length":
			// 1*DIGIT (RFC 9110 §8.6): ParseInt alone would also take
			// "+5" and "-0", which an HTTP/1 hop may read differently.
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || !allDigits(hf.Value) || declared >= 0 && n != declared {
				return http2.ErrCodeProtocol
			}
			declared = n
		}
		k := c.canonical(hf.Name)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, hf.Value)
			continue
		}
		vals[0] = hf.Value
		h[k] = vals[:1:1]
		vals = vals[1:]
	}
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = host
	}
	r := http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       authority,
		RequestURI: requestURI,
		RemoteAddr: c.remote,
	}
	if vv, ok := h["Trailer"]; ok {
		for _, v := range vv {
			for name := range strings.SplitSeq(v, ",") {
				key := http.CanonicalHeaderKey(strings.TrimSpace(name))
				if !validTrailer(key) { // an empty name too
					return http2.ErrCodeProtocol
				}
				if r.Trailer == nil {
					r.Trailer = make(http.Header)
				}
				r.Trailer[key] = nil
			}
		}
		delete(h, "Trailer")
	}
	if f.StreamEnded() {
		if declared > 0 {
			return http2.ErrCodeProtocol
		}
		r.ContentLength = 0
		r.Body = http.NoBody
	} else {
		r.ContentLength = declared
		st.declared = declared
		st.body.st = st
		r.Body = &st.body
		st.needContinue = strings.EqualFold(h.Get("Expect"), "100-continue")
	}
	st.req = r.WithContext(&st.ctx) // the one allocation of the request
	return http2.ErrCodeNo
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// validScheme reports whether s is a URI scheme (RFC 3986 §3.1: ALPHA
// *( ALPHA / DIGIT / "+" / "-" / "." )). RFC 9113 §8.3.1 does not limit
// :scheme to http and https, but a value such as "http://evil/" or one
// with spaces is no scheme: it is refused rather than carried into logs.
func validScheme(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // lower case for letters
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= s[i] && s[i] <= '9' || s[i] == '+' || s[i] == '-' || s[i] == '.'):
		default:
			return false
		}
	}
	return true
}

// validTrailer reports whether key may be a trailer (RFC 9110 §6.5.1).
func validTrailer(key string) bool {
	if key == "" || !httpguts.ValidTrailerHeader(key) {
		return false
	}
	switch key {
	case "Content-Length", "Host", "Trailer", "Te", "Authorization", "Cookie", "Set-Cookie":
		return false
	}
	return true
}

// runHandler serves one stream and releases its slot.
func (c *conn) runHandler(st *stream) {
	defer c.handlers.Done()
	aborted := true
	func() {
		defer func() {
			if e := recover(); e != nil && e != http.ErrAbortHandler {
				c.s.log.Error("h2: handler panic", "remote", c.remote, "panic", fmt.Sprint(e))
			}
		}()
		st.handler.ServeHTTP(&st.rw, st.req)
		aborted = false
	}()
	if !aborted {
		if err := st.rw.finish(); err != nil {
			aborted = true
		}
	}
	closeConn := st.rw.closeConn
	c.mu.Lock()
	var code http2.ErrCode
	rst := false
	switch {
	case aborted && !st.localClosed && !st.reset:
		code, rst = http2.ErrCodeInternal, true
		c.resetLocked(st, errStreamClosed)
	case !st.remoteClosed && !st.reset:
		// Response complete, request still coming: tell the client to stop.
		code, rst = http2.ErrCodeNo, true
		c.resetLocked(st, errStreamClosed)
	}
	st.bodyClosed = true
	c.dropBodyLocked(st)
	c.running--
	var next *stream
	for len(c.queue) > 0 && c.running < int(c.s.cfg.MaxConcurrentStreams) {
		q := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if q.reset || c.closed || c.readerDone {
			// Never run: return the credit of a body that had arrived
			// whole before the reset (resetLocked keeps complete bodies).
			q.bodyClosed = true
			c.dropBodyLocked(q)
			continue
		}
		next = q
		break
	}
	if next != nil {
		c.startLocked(next)
	} else {
		c.maybeIdleLocked()
	}
	c.mu.Unlock()
	st.ctx.cancel(context.Canceled)
	if rst {
		c.writeReset(st.id, code)
	}
	if closeConn {
		c.startGracefulShutdown()
	}
	st.rw.release()
}

// requestBody is the request body of a stream: bytes the reader goroutine
// buffered, handed out with flow-control credit returned as they are read.
type requestBody struct{ st *stream }

func (b *requestBody) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	if st.needContinue {
		st.needContinue = false
		if len(st.buf) == st.off && st.bodyErr == nil {
			c.mu.Unlock()
			c.writeContinue(st)
			c.mu.Lock()
		}
	}
	for {
		if st.off < len(st.buf) {
			n := copy(p, st.buf[st.off:])
			st.off += n
			if st.off == len(st.buf) {
				st.buf, st.off = st.buf[:0], 0
			}
			cu, su := c.creditLocked(st, int64(n))
			c.mu.Unlock()
			c.writeUpdates(cu, st.id, su)
			return n, nil
		}
		if err := st.bodyErr; err != nil {
			if err == io.EOF && len(st.trailer) > 0 {
				if st.req.Trailer == nil {
					st.req.Trailer = make(http.Header, len(st.trailer))
				}
				for _, kv := range st.trailer {
					st.req.Trailer[kv[0]] = append(st.req.Trailer[kv[0]], kv[1])
				}
				st.trailer = nil
			}
			c.mu.Unlock()
			return 0, err
		}
		if st.bodyClosed {
			c.mu.Unlock()
			return 0, errors.New("h2server: read on closed body")
		}
		if st.rnotify == nil {
			st.rnotify = make(chan struct{}, 1)
		}
		rn := st.rnotify
		c.mu.Unlock()
		select {
		case <-rn:
		case <-st.ctx.Done():
			c.mu.Lock()
			if st.off < len(st.buf) || st.bodyErr != nil {
				continue
			}
			c.mu.Unlock()
			return 0, fmt.Errorf("read request body: %w", st.ctx.Err())
		}
		c.mu.Lock()
	}
}

// Close discards what was not read; the client is told to stop sending
// when the handler returns.
func (b *requestBody) Close() error {
	st := b.st
	st.c.mu.Lock()
	st.bodyClosed = true
	st.c.dropBodyLocked(st)
	st.c.mu.Unlock()
	return nil
}

// writeContinue sends 100 Continue on st, unless its final response
// headers have already left: a 1xx after them would be malformed (RFC 9113
// §8.1), and the client that sees a final status sends its body anyway.
func (c *conn) writeContinue(st *stream) {
	c.w.Lock()
	if st.responded {
		c.w.Unlock()
		return
	}
	if ok, _ := c.startFrames(st, false); !ok { // nothing on a reset stream either
		c.w.Unlock()
		return
	}
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
	_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	_ = c.w.UnlockFlush()
}

// reserve waits until up to want bytes may be sent on st and takes them
// from both send windows.
func (st *stream) reserve(want int) (int, error) {
	c := st.c
	c.mu.Lock()
	for {
		if st.reset || c.closed {
			c.mu.Unlock()
			return 0, errStreamClosed
		}
		n, wn := c.send.Take(&st.send, int64(want))
		c.mu.Unlock()
		if n > 0 {
			return int(n), nil
		}
		select {
		case <-wn:
		case <-st.ctx.Done():
			return 0, fmt.Errorf("send on stream %d: %w", st.id, st.ctx.Err())
		}
		c.mu.Lock()
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, respBufSize); return &b }}

const respBufSize = 16 << 10
