package h2server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/meshguard/meshguard/internal/h2flow"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/internal/h2meta"
	"github.com/meshguard/meshguard/internal/h2write"
	"golang.org/x/net/http2"
)

// conn is one HTTP/2 connection. The goroutine in serve reads and handles
// every frame; handlers write their own frames under wmu.
type conn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	fr     *http2.Framer  // read side only (reader goroutine)
	hr     *h2meta.Reader // fr's frames with header blocks decoded
	remote string
	ctx    context.Context
	// streamBase is ctx without its cancellation, the parent of request
	// contexts (see ServeConn).
	streamBase context.Context
	cancel     context.CancelFunc
	// The request-timeout slot (reader goroutine; see requestSlot).
	slot    *deadlineSlot
	slotEnd time.Time
	names   map[string]string // wire name → canonical key (reader goroutine)

	handlers sync.WaitGroup
	lastRead atomic.Int64 // unix nanoseconds of the last read that returned data
	maxFrame atomic.Uint32

	// The write side: w's lock (here "wmu") guards wfr and the fields
	// below it.
	w            *h2write.Writer
	wfr          *http2.Framer // w.Framer
	settingsSent bool          // our SETTINGS, the first frame, is out (under wmu)
	hbuf         bytes.Buffer
	henc         *h2meta.Encoder
	lower        map[string]string // response header key → wire name (under wmu)

	mu          sync.Mutex
	streams     map[uint32]*stream
	maxSeen     uint32 // highest client stream ID seen
	running     int    // handlers running
	queue       []*stream
	send        h2flow.Send // what we may still send on the connection
	peerInitWin int64       // the client's SETTINGS_INITIAL_WINDOW_SIZE
	recv        h2flow.Recv // what the client may still send on the connection
	goAway      bool        // GOAWAY sent: no new streams
	readerDone  bool        // the reader stopped (error or EOF): queued streams never start
	closed      bool
	idleTimer   *time.Timer
	closeTimer  *time.Timer
	pingTimer   *time.Timer
	pingAt      int64 // unix nanoseconds of an unanswered PING, 0 = none
	// cutShort: the streams most recently removed while the client could
	// still send on them (see recentlyCut).
	cutShort     [cutShortKept]cutStream
	cutShortNext int
}

// cutShortKept is how many streams closed before the client's END_STREAM
// a connection remembers: frames the client sent before it saw their
// RST_STREAM are then ignored, as RFC 9113 §5.1 requires, instead of
// ending the connection.
const cutShortKept = 64

// cutStream is one of them; byPeer: the client reset it.
type cutStream struct {
	id     uint32
	byPeer bool
}

// recentlyCut reports whether stream id is one of the streams recently
// removed before the client ended it, and whether the client reset it.
// Called with c.mu held.
func (c *conn) recentlyCut(id uint32) (found, byPeer bool) {
	for _, cs := range c.cutShort {
		if cs.id == id {
			return true, cs.byPeer
		}
	}
	return false, false
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:           s,
		nc:          nc,
		remote:      nc.RemoteAddr().String(),
		names:       make(map[string]string, 32),
		lower:       make(map[string]string, 32),
		streams:     make(map[uint32]*stream),
		send:        h2flow.NewSend(),
		peerInitWin: 65535,
		recv:        h2flow.NewRecv(int64(s.cfg.ConnWindow), 4),
	}
	c.br = bufio.NewReaderSize(h2meta.ActivityReader{R: nc, Last: &c.lastRead}, 64<<10)
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetMaxReadFrameSize(s.cfg.MaxReadFrameSize)
	c.fr.SetReuseFrames()
	c.hr = h2meta.New(c.fr, uint32(s.cfg.MaxHeaderBytes))
	c.w = h2write.New(nc)
	c.wfr = c.w.Framer
	c.henc = h2meta.NewEncoder(&c.hbuf)
	c.maxFrame.Store(16384)
	return c
}

// connError ends the connection with GOAWAY code.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("connection error %v: %s", e.code, e.reason) }

func (c *conn) serve() {
	defer c.handlers.Wait()
	err := c.run()
	// Handlers that run may finish during the drain below, but a stream
	// still queued behind them must not start on a connection that is
	// ending (after a flood of resets, say).
	c.mu.Lock()
	c.readerDone = true
	c.mu.Unlock()
	var ce connError
	if errors.As(err, &ce) {
		c.s.log.Debug("h2: closing connection", "remote", c.remote, "error", err.Error())
		c.mu.Lock()
		last := c.maxSeen
		c.goAway = true
		c.mu.Unlock()
		c.w.Lock()
		_ = c.wfr.WriteGoAway(last, ce.code, nil)
		c.w.Unlock()
	}
	c.w.Drain(time.Second)
	c.closeNow(err)
	if c.slot != nil {
		c.slot.stop() // its streams are cancelled already; release its timer
	}
}

func (c *conn) run() error {
	s := c.s
	_ = c.nc.SetReadDeadline(time.Now().Add(s.cfg.PrefaceTimeout))
	c.w.Lock()
	err := c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(s.cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: s.cfg.MaxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(s.cfg.MaxHeaderBytes)},
	)
	if err == nil && s.cfg.ConnWindow > 65535 {
		err = c.wfr.WriteWindowUpdate(0, uint32(s.cfg.ConnWindow-65535))
	}
	c.settingsSent = true
	c.w.UnlockKick()
	if err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	// A graceful shutdown that began before SETTINGS left did not send its
	// GOAWAY (SETTINGS must come first): send it now.
	c.mu.Lock()
	goAway, last := c.goAway, c.maxSeen
	c.mu.Unlock()
	if goAway {
		c.w.Lock()
		err = c.wfr.WriteGoAway(last, http2.ErrCodeNo, nil)
		c.w.UnlockKick()
		if err != nil {
			return err
		}
	}
	if err := readPreface(c.br); err != nil {
		return err
	}
	first := true
	c.lastRead.Store(time.Now().UnixNano())
	c.mu.Lock()
	c.pingTimer = time.AfterFunc(s.cfg.PingInterval, c.pingCheck)
	c.armIdleLocked()
	c.mu.Unlock()
	for {
		f, err := c.hr.ReadFrame()
		if err != nil {
			switch re := h2meta.Classify(err); {
			case re.StreamID != 0:
				c.onStreamError(re.StreamID, re.Code)
				continue
			case re.Protocol:
				return connError{re.Code, "frame: " + err.Error()}
			}
			return err
		}
		if first {
			sf, ok := f.(*http2.SettingsFrame)
			if !ok || sf.IsAck() {
				return connError{http2.ErrCodeProtocol, "first frame is not SETTINGS"}
			}
			_ = c.nc.SetReadDeadline(time.Time{})
			first = false
		}
		if err := c.handleFrame(f); err != nil {
			return err
		}
	}
}

func (c *conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			c.mu.Lock()
			c.pingAt = 0
			c.mu.Unlock()
			return nil
		}
		c.w.Lock()
		err := c.wfr.WritePing(true, f.Data)
		c.w.UnlockKick()
		return err
	case *http2.GoAwayFrame:
		return nil // the client opens no new streams; open ones finish
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	default:
		return nil // PRIORITY and unknown frame types are ignored
	}
}

// onStreamError answers a frame-level stream error with RST_STREAM.
func (c *conn) onStreamError(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	if id%2 == 1 && id > c.maxSeen {
		c.maxSeen = id
	}
	st := c.streams[id]
	if st != nil {
		c.resetLocked(st, errStreamClosed)
	}
	c.mu.Unlock()
	c.writeReset(id, code)
}

func (c *conn) writeReset(id uint32, code http2.ErrCode) {
	c.w.Lock()
	_ = c.wfr.WriteRSTStream(id, code)
	c.w.UnlockKick()
}

func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, "even stream ID from a client"}
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		c.mu.Unlock()
		return c.onTrailers(st, f)
	}
	if id <= c.maxSeen {
		found, byPeer := c.recentlyCut(id)
		c.mu.Unlock()
		switch {
		case found && byPeer:
			// Nothing may follow the client's own RST_STREAM: a stream
			// error (RFC 9113 §5.1, closed).
			c.writeReset(id, http2.ErrCodeStreamClosed)
			return nil
		case found:
			// Sent before the client saw our RST_STREAM: ignored. Its
			// header block was decoded all the same, so HPACK state
			// stays in step.
			return nil
		}
		return connError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	}
	c.maxSeen = id
	if c.goAway || c.closed {
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if len(c.streams) >= int(c.s.cfg.MaxConcurrentStreams) {
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeRefusedStream)
		return nil
	}
	c.mu.Unlock()

	st := &stream{c: c, id: id, declared: -1}
	// The context first: the request is built with it (WithContext on a
	// finished request would allocate a second one).
	now := time.Now()
	var slot *deadlineSlot
	if t := c.s.cfg.RequestTimeout; t > 0 {
		slot = c.requestSlot(t, now)
	}
	st.ctx.init(c.streamBase, slot, now)
	var handler http.Handler = c.s.cfg.Handler
	if f.Truncated {
		handler = http.HandlerFunc(tooLarge)
		r := http.Request{Method: "GET", URL: &url.URL{Path: "/"}, Proto: "HTTP/2.0", ProtoMajor: 2, Header: http.Header{}, Body: http.NoBody, RemoteAddr: c.remote}
		st.req = r.WithContext(&st.ctx)
	} else if code := c.newRequest(st, f); code != http2.ErrCodeNo {
		st.ctx.cancel(context.Canceled)
		c.writeReset(id, code)
		return nil
	}
	st.handler = handler
	st.rw.st = st
	st.rw.isHead = st.req.Method == http.MethodHead

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		st.ctx.cancel(context.Canceled)
		return nil
	}
	st.recv = h2flow.NewRecv(int64(c.s.cfg.StreamWindow), 4)
	st.send = h2flow.NewSendStream(c.peerInitWin)
	if f.StreamEnded() {
		st.remoteClosed = true
		st.bodyErr = io.EOF
	}
	st.inMap = true
	c.streams[id] = st
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.running < int(c.s.cfg.MaxConcurrentStreams) {
		c.startLocked(st)
		return nil
	}
	// More handlers than streams may be running when the client resets
	// streams whose handlers have not finished: queue, within a bound.
	c.queue = append(c.queue, st)
	if len(c.queue) > 4*int(c.s.cfg.MaxConcurrentStreams) {
		return connError{http2.ErrCodeEnhanceYourCalm, "too many streams reset before their handlers finished"}
	}
	return nil
}

func (c *conn) startLocked(st *stream) {
	c.running++
	c.handlers.Add(1)
	if w := c.s.handlers.take(); w != nil {
		w.next <- st // capacity 1, and only take's caller sends
		return
	}
	go c.s.handlerLoop(st)
}

// handlerLoop runs st's handler, then the handlers of further streams
// handed to it by the pool, until the pool retires it (see handlerPool).
func (s *Server) handlerLoop(st *stream) {
	w := &handlerWorker{next: make(chan *stream, 1)}
	for st != nil {
		st.c.runHandler(st)
		st = s.handlers.wait(w)
	}
}

// idleHandler is the handler pool's janitor period: a handler goroutine
// idle for one to two periods ends.
const idleHandler = 5 * time.Second

func tooLarge(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	_, _ = io.WriteString(w, `{"error":"request header fields too large"}`+"\n")
}

func (c *conn) onTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.remoteClosed {
		c.resetLocked(st, errStreamClosed)
		go c.writeReset(st.id, http2.ErrCodeStreamClosed)
		return nil
	}
	if !f.StreamEnded() {
		return connError{http2.ErrCodeProtocol, "trailers without END_STREAM"}
	}
	if f.Truncated || len(f.PseudoFields()) > 0 {
		c.resetLocked(st, errStreamClosed)
		go c.writeReset(st.id, http2.ErrCodeProtocol)
		return nil
	}
	for _, hf := range f.RegularFields() {
		key := c.canonical(hf.Name)
		if !validTrailer(key) {
			c.resetLocked(st, errStreamClosed)
			go c.writeReset(st.id, http2.ErrCodeProtocol)
			return nil
		}
		// Only st.trailer here: st.req belongs to the handler, and the
		// body's Read copies the trailers into req.Trailer at EOF.
		st.trailer = append(st.trailer, [2]string{key, hf.Value})
	}
	c.endRemoteLocked(st)
	return nil
}

// endRemoteLocked records END_STREAM from the client.
func (c *conn) endRemoteLocked(st *stream) {
	st.remoteClosed = true
	if st.declared >= 0 && st.received != st.declared {
		st.bodyErr = fmt.Errorf("request body: %d bytes, content-length %d", st.received, st.declared)
		c.resetLocked(st, st.bodyErr)
		go c.writeReset(st.id, http2.ErrCodeProtocol)
		return
	}
	st.bodyErr = io.EOF
	notify(st.rnotify)
	if st.localClosed {
		c.removeLocked(st)
	}
}

func (c *conn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	data := f.Data()
	c.mu.Lock()
	if !c.recv.Take(n) {
		c.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA past the connection window"}
	}
	st := c.streams[id]
	if st == nil || st.remoteClosed {
		if id > c.maxSeen {
			c.mu.Unlock()
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		upd := c.recv.Credit(n)
		ignore := false
		if st != nil {
			c.resetLocked(st, errStreamClosed)
		} else if found, byPeer := c.recentlyCut(id); found && !byPeer {
			ignore = true // in flight before our RST_STREAM arrived
		}
		c.mu.Unlock()
		c.writeUpdates(upd, 0, 0)
		if !ignore {
			c.writeReset(id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if !st.recv.Take(n) {
		upd := c.recv.Credit(n)
		c.resetLocked(st, errStreamClosed)
		c.mu.Unlock()
		c.writeUpdates(upd, 0, 0)
		c.writeReset(id, http2.ErrCodeFlowControl)
		return nil
	}
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		upd := c.recv.Credit(n)
		st.bodyErr = errors.New("request body longer than its content-length")
		c.resetLocked(st, st.bodyErr)
		c.mu.Unlock()
		c.writeUpdates(upd, 0, 0)
		c.writeReset(id, http2.ErrCodeProtocol)
		return nil
	}
	var upd, supd int64
	if st.bodyClosed {
		// Nobody will read it: return the credit at once.
		upd, supd = c.creditLocked(st, n)
	} else {
		if pad := n - int64(len(data)); pad > 0 {
			upd, supd = c.creditLocked(st, pad)
		}
		if len(data) > 0 {
			st.buf = append(st.buf, data...)
			notify(st.rnotify)
		}
	}
	if f.StreamEnded() {
		c.endRemoteLocked(st)
		supd = 0 // no window updates for a closed stream
	}
	c.mu.Unlock()
	c.writeUpdates(upd, id, supd)
	return nil
}

// creditLocked returns n consumed bytes of st to both windows.
func (c *conn) creditLocked(st *stream, n int64) (conn, strm int64) {
	conn = c.recv.Credit(n)
	if st.remoteClosed || !st.inMap {
		return conn, 0
	}
	return conn, st.recv.Credit(n)
}

func (c *conn) writeUpdates(connInc int64, id uint32, streamInc int64) {
	if connInc == 0 && streamInc == 0 {
		return
	}
	c.w.Lock()
	if connInc > 0 {
		_ = c.wfr.WriteWindowUpdate(0, uint32(connInc))
	}
	if streamInc > 0 {
		_ = c.wfr.WriteWindowUpdate(id, uint32(streamInc))
	}
	c.w.UnlockKick()
}

func (c *conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxSeen {
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		return nil
	}
	st.peerReset = true
	c.resetLocked(st, fmt.Errorf("stream reset by the client (%v)", f.ErrCode))
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.send.Grow(inc) != nil {
			return connError{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxSeen {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		return nil
	}
	if st.send.Grow(inc) != nil {
		c.resetLocked(st, errStreamClosed)
		go c.writeReset(st.id, http2.ErrCodeFlowControl)
	}
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				if st.send.Adjust(delta) != nil {
					c.mu.Unlock()
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.maxFrame.Store(s.Val)
		case http2.SettingHeaderTableSize:
			c.w.Lock()
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.w.Unlock()
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connError{http2.ErrCode(ce), "bad SETTINGS"}
		}
		return connError{http2.ErrCodeProtocol, "bad SETTINGS: " + err.Error()}
	}
	c.w.Lock()
	err = c.wfr.WriteSettingsAck()
	c.w.UnlockKick()
	return err
}

// resetLocked ends st abnormally: its writers fail, and so does its body
// reader unless the body had arrived whole.
func (c *conn) resetLocked(st *stream, err error) {
	if st.reset {
		return
	}
	st.reset = true
	if st.bodyErr == nil {
		st.bodyErr = err
		c.dropBodyLocked(st)
	}
	c.removeLocked(st)
	notify(st.rnotify)
	st.send.Wake()
	st.ctx.cancel(context.Canceled)
}

// dropBodyLocked discards st's unread body bytes and returns their credit
// to the connection window (nobody will read them).
func (c *conn) dropBodyLocked(st *stream) {
	unread := int64(len(st.buf) - st.off)
	st.buf, st.off = nil, 0
	if unread > 0 {
		if u := c.recv.Credit(unread); u > 0 {
			go c.writeUpdates(u, 0, 0)
		}
	}
}

// removeLocked takes st out of the stream table.
func (c *conn) removeLocked(st *stream) {
	if !st.inMap {
		return
	}
	st.inMap = false
	delete(c.streams, st.id)
	if !st.remoteClosed {
		c.cutShort[c.cutShortNext] = cutStream{st.id, st.peerReset}
		c.cutShortNext = (c.cutShortNext + 1) % cutShortKept
	}
	c.maybeIdleLocked()
}

// maybeIdleLocked arms the idle timer, or finishes a graceful shutdown,
// once nothing is open or running.
func (c *conn) maybeIdleLocked() {
	if len(c.streams) > 0 || c.running > 0 || c.closed {
		return
	}
	if c.goAway {
		// Close a moment later, not at once: a request the client sent
		// before it read the GOAWAY then gets REFUSED_STREAM (safe to
		// retry) instead of a reset connection, and the GOAWAY is not lost
		// to a reset. A client that closes first ends it sooner.
		if c.closeTimer == nil {
			c.closeTimer = time.AfterFunc(c.s.cfg.GoAwayGrace, func() {
				c.w.Drain(time.Second)
				c.closeNow(nil)
			})
		}
		return
	}
	c.armIdleLocked()
}

func (c *conn) armIdleLocked() {
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(c.s.cfg.IdleTimeout, c.onIdle)
		return
	}
	c.idleTimer.Reset(c.s.cfg.IdleTimeout)
}

func (c *conn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && c.running == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.startGracefulShutdown()
	}
}

// pingCheck sends a PING after PingInterval of silence and closes the
// connection when the answer does not come within PingTimeout.
func (c *conn) pingCheck() {
	now := time.Now().UnixNano()
	last := c.lastRead.Load()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.pingAt != 0 {
		if last > c.pingAt {
			c.pingAt = 0 // something arrived: alive
		} else if now-c.pingAt >= int64(c.s.cfg.PingTimeout) {
			c.mu.Unlock()
			c.s.log.Debug("h2: no answer to PING, closing", "remote", c.remote)
			c.closeNow(errors.New("ping timeout"))
			return
		} else {
			c.pingTimer.Reset(time.Duration(c.pingAt + int64(c.s.cfg.PingTimeout) - now))
			c.mu.Unlock()
			return
		}
	}
	silent := time.Duration(now - last)
	if silent < c.s.cfg.PingInterval {
		c.pingTimer.Reset(c.s.cfg.PingInterval - silent)
		c.mu.Unlock()
		return
	}
	c.pingAt = now
	c.pingTimer.Reset(c.s.cfg.PingTimeout)
	c.mu.Unlock()
	c.w.Lock()
	_ = c.wfr.WritePing(false, [8]byte{'m', 'e', 's', 'h', 'p', 'i', 'n', 'g'})
	c.w.UnlockKick()
}

// startGracefulShutdown sends GOAWAY: streams already seen finish, new ones
// are refused, and the connection closes when the last one is done.
func (c *conn) startGracefulShutdown() {
	c.mu.Lock()
	if c.goAway || c.closed {
		c.mu.Unlock()
		return
	}
	c.goAway = true
	last := c.maxSeen
	c.mu.Unlock()
	c.w.Lock()
	if c.settingsSent { // else run sends it after SETTINGS
		_ = c.wfr.WriteGoAway(last, http2.ErrCodeNo, nil)
	}
	c.w.UnlockKick()
	c.mu.Lock()
	c.maybeIdleLocked()
	c.mu.Unlock()
}

// closeNow closes the connection: every stream's context is canceled and
// its pending reads and writes fail.
func (c *conn) closeNow(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if err == nil {
		err = errConnClosed
	}
	for _, st := range c.streams {
		c.resetLocked(st, err)
	}
	for _, st := range c.queue {
		st.ctx.cancel(context.Canceled)
	}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
	_ = c.nc.Close()
}

// requestSlot is the deadline slot of the streams opening now, when
// RequestTimeout (t) is set. Streams opened within one slot (t/16, at
// most 100ms) share a deadline, the slot's end plus t: every request gets
// at least t and at most t/16 more, and the connection runs one timer per
// slot instead of one per request (a timer and three allocations per
// request, 3-4% of the edge's CPU). Slots are not ended early: each ends
// at its deadline, as its streams would.
func (c *conn) requestSlot(t time.Duration, now time.Time) *deadlineSlot {
	if c.slot == nil || !now.Before(c.slotEnd) {
		c.slotEnd = now.Add(min(t/16, 100*time.Millisecond))
		c.slot = newDeadlineSlot(c.slotEnd.Add(t))
	}
	return c.slot
}

// canonical returns the http.Header key for a (lowercase) wire name,
// cached per connection.
func (c *conn) canonical(name string) string {
	if k, ok := c.names[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if len(c.names) < 512 {
		c.names[name] = k
	}
	return k
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
