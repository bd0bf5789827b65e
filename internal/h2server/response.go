package h2server

import (
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// responseWriter is the http.ResponseWriter of one stream. Small bodies
// are buffered so that a whole response leaves as one HEADERS and one DATA
// frame, written in one hold of the connection's write lock.
type responseWriter struct {
	st          *stream
	header      http.Header
	status      int
	wroteHeader bool // WriteHeader called (or implied)
	ended       bool // END_STREAM written
	isHead      bool
	closeConn   bool // the handler set "Connection: close"
	buf         *[]byte
	trailers    []string // declared with the Trailer header when HEADERS left
}

// Header returns the response header map, made on first use.
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// AdoptHeader makes h the response header map, so that a proxy relaying a
// response need not copy the upstream's header map into a new one. Fields
// already set through Header are kept where h has no field of that name.
// It reports false, changing nothing, once WriteHeader has been called.
// The caller hands h over: it changes h only through Header from then on.
func (w *responseWriter) AdoptHeader(h http.Header) bool {
	if w.wroteHeader || h == nil {
		return false
	}
	for k, vv := range w.header {
		if _, ok := h[k]; !ok {
			h[k] = vv
		}
	}
	w.header = h
	return true
}

// WriteHeader records the status; the HEADERS frame leaves with the first
// flush of the body, or when the handler returns. 1xx codes are ignored.
func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		return
	}
	if code > 999 {
		code = http.StatusInternalServerError
	}
	w.wroteHeader = true
	w.status = code
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// Write buffers p, sending when the buffer fills.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.ended {
		return 0, errStreamClosed
	}
	if w.isHead || !bodyAllowed(w.status) {
		if !bodyAllowed(w.status) {
			return 0, http.ErrBodyNotAllowed
		}
		return len(p), nil
	}
	if w.buf == nil {
		w.buf = bufPool.Get().(*[]byte)
	}
	b := *w.buf
	if len(b)+len(p) <= cap(b) {
		*w.buf = append(b, p...)
		return len(p), nil
	}
	if err := w.send(b, false); err != nil {
		return 0, err
	}
	*w.buf = b[:0]
	if len(p) <= cap(b)/2 {
		*w.buf = append(b[:0], p...)
		return len(p), nil
	}
	if err := w.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends the HEADERS frame and whatever body is buffered.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error (for http.ResponseController).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var b []byte
	if w.buf != nil {
		b = *w.buf
	}
	if len(b) == 0 && w.st.responded {
		return nil
	}
	if err := w.send(b, false); err != nil {
		return err
	}
	if w.buf != nil {
		*w.buf = b[:0]
	}
	return nil
}

// finish completes the response after the handler returned.
func (w *responseWriter) finish() error {
	if w.ended {
		return nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var b []byte
	if w.buf != nil {
		b = *w.buf
	}
	if !w.st.responded {
		w.trailers = declaredTrailers(w.header)
		if len(w.trailers) == 0 && !hasPrefixedTrailers(w.header) && bodyAllowed(w.status) && !w.isHead {
			if _, ok := w.header["Content-Length"]; !ok {
				w.Header()["Content-Length"] = []string{strconv.Itoa(len(b))}
			}
		}
	}
	tr := w.collectTrailers()
	if err := w.send(b, len(tr) == 0); err != nil {
		return err
	}
	if len(tr) == 0 {
		return nil
	}
	return w.sendTrailers(tr)
}

func (w *responseWriter) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		bufPool.Put(w.buf)
		w.buf = nil
	}
}

// send writes HEADERS (the first time) and data, with END_STREAM when end.
func (w *responseWriter) send(data []byte, end bool) error {
	st := w.st
	c := st.c
	if !st.responded {
		if w.trailers == nil {
			w.trailers = declaredTrailers(w.header)
		}
		if v, ok := w.header["Connection"]; ok {
			for _, s := range v {
				if strings.Contains(strings.ToLower(s), "close") {
					w.closeConn = true
				}
			}
		}
	}
	for {
		n := 0
		if len(data) > 0 {
			var err error
			if n, err = st.reserve(len(data)); err != nil {
				return err
			}
		}
		last := n == len(data)
		c.w.Lock()
		// A stream reset meanwhile (by the client, or by us with an
		// RST_STREAM already queued) must get no more frames (RFC 9113
		// §5.1); reserve only checks when there is data to send.
		ok, alone := c.startFrames(st, end && last)
		if !ok {
			c.w.Unlock() // nothing written
			return errStreamClosed
		}
		if alone {
			c.w.Alone()
		}
		headerEnd := false
		if !st.responded {
			headerEnd = end && len(data) == 0
			if err := c.writeHeadersLocked(st.id, w.status, w.header, w.trailers, headerEnd); err != nil {
				c.w.UnlockFlush()
				return err
			}
			st.responded = true
		}
		var err error
		switch {
		case n > 0:
			err = c.writeDataLocked(st.id, data[:n], end && last)
		case end && !headerEnd:
			err = c.wfr.WriteData(st.id, true, nil)
		}
		if ferr := c.w.UnlockFlush(); err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			break
		}
	}
	if end {
		w.ended = true
	}
	return nil
}

// startFrames is called with wmu held (lock order: wmu, then mu) before
// frames of st are written. It reports false when st was reset or the
// connection closed: a reset stream gets no more frames (RFC 9113 §5.1).
// alone reports that no other handler of the connection runs or waits
// (nothing else is about to write, so the flush need not wait for it).
// With final (the frames end the stream) it closes the sending side first,
// so that a client answering the END_STREAM at once already finds the
// stream closed.
func (c *conn) startFrames(st *stream, final bool) (ok, alone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.reset || c.closed {
		return false, false
	}
	if final {
		st.localClosed = true
		if st.remoteClosed {
			c.removeLocked(st)
		}
	}
	return true, c.running <= 1 && len(c.queue) == 0
}

func (w *responseWriter) sendTrailers(tr []hpack.HeaderField) error {
	st := w.st
	c := st.c
	c.w.Lock()
	if ok, _ := c.startFrames(st, true); !ok {
		c.w.Unlock() // nothing written
		return errStreamClosed
	}
	c.hbuf.Reset()
	for _, f := range tr {
		_ = c.henc.WriteField(f)
	}
	err := c.writeBlockLocked(st.id, c.hbuf.Bytes(), true)
	if ferr := c.w.UnlockFlush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	w.ended = true
	return nil
}

// declaredTrailers lists the keys announced with the Trailer header.
func declaredTrailers(h http.Header) []string {
	vv, ok := h["Trailer"]
	if !ok {
		return nil
	}
	var keys []string
	for _, v := range vv {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, http.CanonicalHeaderKey(k))
			}
		}
	}
	return keys
}

func hasPrefixedTrailers(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// collectTrailers returns the trailer fields the handler set: declared
// keys, and keys with http.TrailerPrefix.
func (w *responseWriter) collectTrailers() []hpack.HeaderField {
	var out []hpack.HeaderField
	for _, k := range w.trailers {
		for _, v := range w.header[k] {
			if validTrailer(k) && httpguts.ValidHeaderFieldValue(v) {
				out = append(out, hpack.HeaderField{Name: strings.ToLower(k), Value: v})
			}
		}
	}
	for k, vv := range w.header {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !validTrailer(http.CanonicalHeaderKey(name)) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				out = append(out, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
			}
		}
	}
	return out
}

// writeHeadersLocked encodes and writes a response HEADERS block.
func (c *conn) writeHeadersLocked(id uint32, status int, h http.Header, trailers []string, end bool) error {
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	for k, vv := range h {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || isDeclared(trailers, k) {
			continue
		}
		name := c.lowerName(k)
		if !httpguts.ValidHeaderFieldName(name) {
			continue
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			_ = c.henc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
	return c.writeBlockLocked(id, c.hbuf.Bytes(), end)
}

func isDeclared(keys []string, k string) bool {
	for _, d := range keys {
		if d == k {
			return true
		}
	}
	return false
}

// writeBlockLocked writes a header block, split into HEADERS and
// CONTINUATION frames no larger than the client's max frame size.
func (c *conn) writeBlockLocked(id uint32, block []byte, end bool) error {
	max := int(c.maxFrame.Load())
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	err := c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		err = c.wfr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

// writeDataLocked writes data in frames no larger than the client's max
// frame size; END_STREAM on the last one when end.
func (c *conn) writeDataLocked(id uint32, data []byte, end bool) error {
	max := int(c.maxFrame.Load())
	for {
		chunk := data
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		data = data[len(chunk):]
		if err := c.wfr.WriteData(id, end && len(data) == 0, chunk); err != nil {
			return err
		}
		if len(data) == 0 {
			return nil
		}
	}
}

// lowerName is the HTTP/2 (lowercase) form of a header key, cached.
func (c *conn) lowerName(k string) string {
	if n, ok := c.lower[k]; ok {
		return n
	}
	n := strings.ToLower(k)
	if len(c.lower) < 512 {
		c.lower[k] = n
	}
	return n
}

var statusTexts = func() [600]string {
	var t [600]string
	for i := 100; i < 600; i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(code int) string {
	if code >= 100 && code < 600 {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}
