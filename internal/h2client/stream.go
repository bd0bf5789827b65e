package h2client

import (
	"context"
	"errors"
	"fmt"
	"github.com/meshguard/meshguard/internal/h2flow"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response. Fields after id are guarded by
// the connection's mu.
type stream struct {
	c   *Conn
	id  uint32
	req *http.Request
	ctx context.Context

	send       h2flow.SendStream // what we may still send
	recv       h2flow.Recv       // what the server may still send
	resp       *http.Response
	respCh     chan struct{} // one signal: resp or err is set
	signaled   bool
	err        error
	buf        []byte // received, unread body bytes: buf[off:]
	off        int
	bodyLeft   int64       // response body bytes still due by content-length; -1: unknown
	eof        bool        // END_STREAM received
	trailer    http.Header // received trailers, copied to resp.Trailer at EOF
	localDone  bool        // END_STREAM sent
	reset      bool        // RST_STREAM sent or received
	removed    bool
	bodyClosed bool
	rnotify    chan struct{} // body data or end arrived
}

// RoundTrip sends req on the connection and waits for the response
// headers. A request with a body has it sent by a goroutine of its own;
// req.Body is always closed. Errors wrapping ErrNotSent mean the server
// did not process the request.
func (c *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	host, err := validateRequest(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	contentLength := int64(0)
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody {
		contentLength = req.ContentLength
		if contentLength == 0 {
			contentLength = -1
		}
	}
	endOnHeaders := !hasBody && len(req.Trailer) == 0

	c.w.Lock()
	c.mu.Lock()
	if c.reserved > 0 {
		c.reserved--
	}
	if !c.usableLocked() {
		why := "the connection is closing"
		if c.closed {
			why = "the connection is closed"
		}
		c.mu.Unlock()
		c.w.Unlock()
		closeBody(req)
		return nil, notSent(why)
	}
	if len(c.streams) >= c.maxStreams {
		c.mu.Unlock()
		c.w.Unlock()
		closeBody(req)
		return nil, notSent("the server's stream limit is reached")
	}
	st := &stream{
		c: c, id: c.nextID.Load(), req: req, ctx: ctx,
		send: h2flow.NewSendStream(c.peerInitWin), recv: h2flow.NewRecv(int64(c.cfg.StreamWindow), 2),
		respCh: make(chan struct{}, 1), localDone: endOnHeaders,
	}
	c.nextID.Add(2)
	c.streams[st.id] = st
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if len(c.streams) == 1 && c.reserved == 0 {
		c.w.Alone() // no other request in flight on this connection
	}
	c.mu.Unlock()
	c.encodeHeadersLocked(req, host, contentLength)
	err = c.writeBlockLocked(st.id, c.hbuf.Bytes(), endOnHeaders)
	if ferr := c.w.UnlockFlush(); err == nil {
		err = ferr
	}
	if err != nil {
		closeBody(req)
		c.closeConn(fmt.Errorf("h2client: write request: %w", err), false)
		return nil, fmt.Errorf("h2client: write request: %w", err)
	}
	if !endOnHeaders {
		go st.sendBody(hasBody)
	} else if req.Body != nil {
		_ = req.Body.Close()
	}

	select {
	case <-st.respCh:
	case <-ctx.Done():
		st.cancel(context.Cause(ctx))
		return nil, ctx.Err()
	}
	c.mu.Lock()
	resp, err := st.resp, st.err
	c.mu.Unlock()
	if resp == nil {
		return nil, err
	}
	return resp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// signalLocked wakes RoundTrip (once).
func (st *stream) signalLocked() {
	if !st.signaled {
		st.signaled = true
		st.respCh <- struct{}{}
	}
}

// failLocked ends the stream with err: RoundTrip, the body reader and the
// body sender see it.
func (st *stream) failLocked(err error) {
	if st.err == nil {
		st.err = err
	}
	st.signalLocked()
	notify(st.rnotify)
	st.send.Wake()
}

// cancel resets the stream (the caller gave up) and forgets it.
func (st *stream) cancel(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	st.resetWith(http2.ErrCodeCancel, cause, true)
}

// resetWith fails the stream with err, forgets it, drops its unread body
// and sends RST_STREAM with code unless it was reset or finished already.
// block says whether this goroutine may write to the socket itself (not
// the reader goroutine).
func (st *stream) resetWith(code http2.ErrCode, err error, block bool) {
	c := st.c
	c.mu.Lock()
	done := st.removed || st.reset
	st.reset = true
	st.failLocked(err)
	credit := st.discardLocked()
	c.removeLocked(st)
	c.mu.Unlock()
	c.w.Lock()
	if !done {
		_ = c.w.Framer.WriteRSTStream(st.id, code)
	}
	if credit > 0 {
		_ = c.w.Framer.WriteWindowUpdate(0, uint32(credit))
	}
	if block {
		_ = c.w.UnlockFlush()
	} else {
		c.w.UnlockKick()
	}
}

// discardLocked drops unread body bytes and returns the connection credit
// to send for them (and for what was consumed but not yet returned).
func (st *stream) discardLocked() int64 {
	c := st.c
	n := int64(len(st.buf) - st.off)
	st.buf, st.off = nil, 0
	return c.recv.Credit(n)
}

func notify(ch chan struct{}) {
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// body is a response body.
type body struct{ st *stream }

func (b body) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	for {
		if st.bodyClosed {
			c.mu.Unlock()
			return 0, errBodyClosed
		}
		if st.off < len(st.buf) {
			n := copy(p, st.buf[st.off:])
			st.off += n
			if st.off == len(st.buf) {
				st.buf, st.off = st.buf[:0], 0
			}
			connInc, strmInc := c.creditLocked(st, int64(n))
			var err error
			if st.eof && st.off == len(st.buf) {
				err = st.finishLocked()
			}
			c.mu.Unlock()
			c.writeUpdates(connInc, st.id, strmInc)
			return n, err
		}
		if st.eof {
			err := st.finishLocked()
			c.mu.Unlock()
			return 0, err
		}
		if st.err != nil {
			err := st.err
			c.mu.Unlock()
			return 0, err
		}
		if st.rnotify == nil {
			st.rnotify = make(chan struct{}, 1)
		}
		rn := st.rnotify
		c.mu.Unlock()
		select {
		case <-rn:
		case <-st.ctx.Done():
			st.cancel(context.Cause(st.ctx))
			return 0, st.ctx.Err()
		}
		c.mu.Lock()
	}
}

// finishLocked is the body's end: trailers become visible in resp.Trailer
// (in the reader's goroutine, as net/http does).
func (st *stream) finishLocked() error {
	for k, vv := range st.trailer {
		if st.resp.Trailer == nil {
			st.resp.Trailer = make(http.Header, len(st.trailer))
		}
		st.resp.Trailer[k] = vv
	}
	st.trailer = nil
	return io.EOF
}

// Close discards the rest of the body; an unfinished stream is reset.
func (b body) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	if st.bodyClosed {
		c.mu.Unlock()
		return nil
	}
	st.bodyClosed = true
	open := !st.eof && !st.reset && st.err == nil
	if st.eof && st.off == len(st.buf) {
		_ = st.finishLocked()
	}
	credit := st.discardLocked()
	if open {
		st.reset = true
		st.failLocked(errBodyClosed)
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if !open && credit == 0 {
		return nil
	}
	c.w.Lock()
	if open {
		_ = c.w.Framer.WriteRSTStream(st.id, http2.ErrCodeCancel)
	}
	if credit > 0 {
		_ = c.w.Framer.WriteWindowUpdate(0, uint32(credit))
	}
	_ = c.w.UnlockFlush()
	return nil
}

// creditLocked records n consumed bytes of st and returns the window
// increments due: a window is topped up once half of it is consumed.
func (c *Conn) creditLocked(st *stream, n int64) (connInc, strmInc int64) {
	connInc = c.recv.Credit(n)
	if !st.eof && !st.reset {
		strmInc = st.recv.Credit(n)
	}
	return connInc, strmInc
}

func (c *Conn) writeUpdates(connInc int64, id uint32, strmInc int64) {
	if connInc == 0 && strmInc == 0 {
		return
	}
	c.w.Lock()
	if connInc > 0 {
		_ = c.w.Framer.WriteWindowUpdate(0, uint32(connInc))
	}
	if strmInc > 0 {
		_ = c.w.Framer.WriteWindowUpdate(id, uint32(strmInc))
	}
	_ = c.w.UnlockFlush()
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// sendBody sends the request body (when there is one) and the trailers or
// an empty END_STREAM DATA frame, then closes req.Body.
func (st *stream) sendBody(hasBody bool) {
	c := st.c
	req := st.req
	defer closeBody(req)
	if hasBody {
		bp := bodyBufs.Get().(*[]byte)
		defer bodyBufs.Put(bp)
		buf := *bp
		var sent int64
		for {
			n, rerr := req.Body.Read(buf)
			data := buf[:n]
			sent += int64(n)
			if req.ContentLength > 0 && (sent > req.ContentLength || (rerr == io.EOF && sent < req.ContentLength)) {
				// What went out would not match the content-length sent.
				st.abort(fmt.Errorf("h2client: request body of %d bytes or more, content-length %d", sent, req.ContentLength))
				return
			}
			for len(data) > 0 {
				k, err := st.reserve(len(data))
				if err != nil {
					return // the stream ended: nothing more to send
				}
				c.w.Lock()
				if !st.writableLocked() {
					c.w.Unlock()
					return
				}
				err = c.w.Framer.WriteData(st.id, false, data[:k])
				if ferr := c.w.UnlockFlush(); err == nil {
					err = ferr
				}
				if err != nil {
					c.closeConn(fmt.Errorf("h2client: write request body: %w", err), false)
					return
				}
				data = data[k:]
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				st.abort(fmt.Errorf("h2client: read request body: %w", rerr))
				return
			}
		}
	}
	c.w.Lock()
	if !st.writableLocked() {
		c.w.Unlock()
		return
	}
	var err error
	if len(req.Trailer) > 0 {
		c.hbuf.Reset()
		for k, vv := range req.Trailer {
			name := c.wire(k)
			for _, v := range vv {
				_ = c.henc.WriteField(hpack.HeaderField{Name: name, Value: v})
			}
		}
		err = c.writeBlockLocked(st.id, c.hbuf.Bytes(), true)
	} else {
		err = c.w.Framer.WriteData(st.id, true, nil)
	}
	c.mu.Lock()
	st.localDone = true
	if st.eof {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if ferr := c.w.UnlockFlush(); err == nil {
		err = ferr
	}
	if err != nil {
		c.closeConn(fmt.Errorf("h2client: write request body: %w", err), false)
	}
}

// writableLocked (under wmu) reports whether frames may still be sent on
// st: not reset, connection open.
func (st *stream) writableLocked() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return !st.reset && !c.closed && (st.err == nil || st.eof)
}

// abort resets the stream because the request body failed.
func (st *stream) abort(err error) { st.resetWith(http2.ErrCodeCancel, err, true) }

// reserve waits until up to want bytes (at most one frame) may be sent on
// st and takes them from both send windows.
func (st *stream) reserve(want int) (int, error) {
	c := st.c
	want = min(want, int(c.maxFrame.Load()))
	c.mu.Lock()
	for {
		if st.reset || c.closed || (st.err != nil && !st.eof) {
			c.mu.Unlock()
			return 0, errClosed
		}
		n, wn := c.send.Take(&st.send, int64(want))
		c.mu.Unlock()
		if n > 0 {
			return int(n), nil
		}
		select {
		case <-wn:
		case <-st.ctx.Done():
			st.cancel(context.Cause(st.ctx))
			return 0, st.ctx.Err()
		}
		c.mu.Lock()
	}
}

// newResponse builds the response from the server's header fields, or
// returns an error for a malformed one.
func (c *Conn) newResponse(st *stream, f *http2.MetaHeadersFrame) (*http.Response, error) {
	status := f.PseudoValue("status")
	code, err := strconv.Atoi(status)
	if len(status) != 3 || err != nil || code < 100 {
		return nil, fmt.Errorf("h2client: malformed :status %q", status)
	}
	regular := f.RegularFields()
	h := make(http.Header, len(regular))
	// One backing array for the values (as net/textproto does): a key's
	// first value takes a one-element slice of it, later ones append
	// (which copies out only for repeated keys).
	vals := make([]string, len(regular))
	for i, hf := range regular {
		k := c.canonical(hf.Name)
		if vv, ok := h[k]; ok {
			h[k] = append(vv[:len(vv):len(vv)], hf.Value)
			continue
		}
		vals[i] = hf.Value
		h[k] = vals[i : i+1 : i+1]
	}
	resp := &http.Response{
		Status:        statusLine(status, code),
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		ContentLength: -1,
		Request:       st.req,
	}
	if vv := h["Content-Length"]; len(vv) == 1 {
		if n, err := strconv.ParseInt(vv[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		} else {
			return nil, fmt.Errorf("h2client: malformed content-length %q", vv[0])
		}
	} else if len(vv) > 1 {
		return nil, errors.New("h2client: several content-length values")
	}
	for _, v := range h["Trailer"] {
		for _, k := range splitComma(v) {
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header)
			}
			resp.Trailer[http.CanonicalHeaderKey(k)] = nil
		}
	}
	if f.StreamEnded() {
		resp.Body = http.NoBody
		if st.req.Method != http.MethodHead {
			resp.ContentLength = 0 // a HEAD response keeps the length it announced
		}
	} else {
		resp.Body = body{st}
	}
	return resp, nil
}

// statusLine is Response.Status, without an allocation for common codes.
func statusLine(status string, code int) string {
	switch code {
	case 200:
		return "200 OK"
	case 204:
		return "204 No Content"
	case 304:
		return "304 Not Modified"
	case 403:
		return "403 Forbidden"
	case 404:
		return "404 Not Found"
	}
	return status + " " + http.StatusText(code)
}

func splitComma(v string) []string {
	var out []string
	for v != "" {
		var k string
		k, v, _ = strings.Cut(v, ",")
		if k = textproto.TrimString(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// canonical returns the http.Header key for a (lowercase) wire name,
// cached per connection (readLoop only).
func (c *Conn) canonical(name string) string {
	if k, ok := c.names[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if len(c.names) < 1000 {
		c.names[name] = k
	}
	return k
}
