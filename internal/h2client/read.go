package h2client

import (
	"errors"
	"fmt"
	"github.com/meshguard/meshguard/internal/h2meta"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// connError ends the connection with GOAWAY code.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string {
	return fmt.Sprintf("h2client: connection error %v: %s", e.code, e.reason)
}

// streamError is how a stream failed on the server's side.
type streamError struct {
	id   uint32
	code http2.ErrCode
}

func (e streamError) Error() string {
	return fmt.Sprintf("h2client: stream %d reset by the server: %v", e.id, e.code)
}

// readLoop reads and handles every frame until the connection fails.
func (c *Conn) readLoop() {
	defer close(c.readDone)
	err := c.readFrames()
	var ce connError
	if errors.As(err, &ce) {
		c.w.Lock()
		_ = c.w.Framer.WriteGoAway(0, ce.code, []byte(ce.reason))
		c.w.Unlock()
		c.w.Drain(time.Second)
	}
	c.mu.Lock()
	goAway, last := c.goAway, c.goAwayLast
	c.mu.Unlock()
	if goAway && last == 0 {
		err = errClosed // the server said it was done
	}
	c.closeConn(fmt.Errorf("h2client: connection lost: %w", err), false)
}

// readFrames returns the error that ended the connection (never nil).
func (c *Conn) readFrames() error {
	first := true
	for {
		f, err := c.hr.ReadFrame()
		if err != nil {
			switch re := h2meta.Classify(err); {
			case re.StreamID != 0:
				c.resetFromServer(re.StreamID, re.Code, fmt.Errorf("h2client: bad frame on stream %d: %w", re.StreamID, err))
				continue
			case re.Protocol:
				return connError{re.Code, err.Error()}
			}
			return err
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return connError{http2.ErrCodeProtocol, "the server's first frame is not SETTINGS"}
			}
			first = false
		}
		if err := c.handleFrame(f); err != nil {
			return err
		}
	}
}

func (c *Conn) handleFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		if st != nil {
			st.reset = true
			var err error = streamError{f.StreamID, f.ErrCode}
			switch {
			case f.ErrCode == http2.ErrCodeRefusedStream && st.resp == nil:
				err = notSent("the server refused the stream")
			case f.ErrCode == http2.ErrCodeNo && st.eof:
				err = nil // complete response; stop sending the body
			}
			if err != nil {
				st.failLocked(err)
			} else {
				st.send.Wake()
			}
			c.removeLocked(st)
		} else if f.StreamID >= c.nextID.Load() {
			c.mu.Unlock()
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		c.mu.Unlock()
		return nil
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			c.mu.Lock()
			c.pingAt = 0
			c.mu.Unlock()
			return nil
		}
		c.w.Lock()
		_ = c.w.Framer.WritePing(true, f.Data)
		c.w.UnlockKick()
		return nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		if !c.goAway || f.LastStreamID < c.goAwayLast {
			c.goAwayLast = f.LastStreamID
		}
		c.goAway = true
		for id, st := range c.streams {
			if id > c.goAwayLast {
				st.reset = true
				st.failLocked(notSent("the server's GOAWAY is below the stream"))
				c.removeLocked(st)
			}
		}
		if len(c.streams) == 0 {
			go c.closeConn(errClosed, false)
		}
		c.mu.Unlock()
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE although push is disabled"}
	default:
		return nil // PRIORITY and unknown frame types are ignored
	}
}

// resetFromServer fails a stream whose frame was malformed and resets it.
func (c *Conn) resetFromServer(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil {
		st.resetWith(code, err, false)
	}
}

func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, "HEADERS on a server-initiated stream"}
	}
	c.mu.Lock()
	st := c.streams[id]
	if st == nil {
		c.mu.Unlock()
		if id >= c.nextID.Load() {
			return connError{http2.ErrCodeProtocol, "HEADERS on an idle stream"}
		}
		return nil // a stream we reset or gave up on
	}
	if st.eof {
		c.mu.Unlock()
		c.resetFromServer(id, http2.ErrCodeStreamClosed, errors.New("h2client: HEADERS after the end of the stream"))
		return nil
	}
	if f.Truncated {
		c.mu.Unlock()
		c.resetFromServer(id, http2.ErrCodeCancel, fmt.Errorf("h2client: response header list larger than %d bytes", c.cfg.MaxHeaderBytes))
		return nil
	}
	if st.resp != nil {
		// Trailers: must end the stream and carry no pseudo-header.
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			c.mu.Unlock()
			c.resetFromServer(id, http2.ErrCodeProtocol, errors.New("h2client: malformed trailers"))
			return nil
		}
		regular := f.RegularFields()
		tr := make(map[string][]string, len(regular))
		for _, hf := range regular {
			k := c.canonical(hf.Name)
			tr[k] = append(tr[k], hf.Value)
		}
		if st.bodyLeft > 0 {
			st.reset = true // over: no reset to send
			st.failLocked(fmt.Errorf("h2client: response body shorter than content-length %d", st.resp.ContentLength))
			credit := st.discardLocked()
			c.removeLocked(st)
			c.mu.Unlock()
			c.creditConn(credit)
			return nil
		}
		st.trailer = tr
		c.endRemoteLocked(st)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	resp, err := c.newResponse(st, f)
	if err != nil {
		c.resetFromServer(id, http2.ErrCodeProtocol, err)
		return nil
	}
	if resp.StatusCode < 200 {
		if resp.StatusCode == 101 || f.StreamEnded() {
			c.resetFromServer(id, http2.ErrCodeProtocol, fmt.Errorf("h2client: unexpected informational status %d", resp.StatusCode))
		}
		return nil // 100 Continue and other 1xx: the final response follows
	}
	c.mu.Lock()
	if st.removed { // reset meanwhile
		c.mu.Unlock()
		return nil
	}
	st.resp = resp
	st.bodyLeft = resp.ContentLength
	if st.req.Method == http.MethodHead {
		st.bodyLeft = -1
	}
	st.signalLocked()
	if f.StreamEnded() {
		c.endRemoteLocked(st)
	}
	c.mu.Unlock()
	return nil
}

// endRemoteLocked records the server's END_STREAM.
func (c *Conn) endRemoteLocked(st *stream) {
	st.eof = true
	notify(st.rnotify)
	st.send.Wake()
	if st.localDone {
		c.removeLocked(st)
	}
}

func (c *Conn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	flow := int64(f.Length) // padding counts too
	data := f.Data()
	c.mu.Lock()
	if !c.recv.Take(flow) {
		c.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	st := c.streams[id]
	if st == nil || st.eof || st.bodyClosed || st.resp == nil {
		credit := flow
		bad := st == nil && id >= c.nextID.Load()
		var protoErr bool
		if st != nil && !st.bodyClosed && (st.eof || st.resp == nil) {
			protoErr = true
		}
		inc := c.recv.Credit(credit)
		c.mu.Unlock()
		if bad {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		if protoErr {
			c.resetFromServer(id, http2.ErrCodeProtocol, errors.New("h2client: DATA before the response headers or after the end of the stream"))
		}
		if inc > 0 {
			c.w.Lock()
			_ = c.w.Framer.WriteWindowUpdate(0, uint32(inc))
			c.w.UnlockKick()
		}
		return nil
	}
	if !st.recv.Take(flow) {
		c.mu.Unlock()
		c.resetFromServer(id, http2.ErrCodeFlowControl, errors.New("h2client: DATA beyond the stream window"))
		return nil
	}
	if st.bodyLeft >= 0 {
		// The body must match the response's content-length (RFC 9113
		// §8.1.1): a proxy must not pass on a short or long body as whole.
		st.bodyLeft -= int64(len(data))
		if st.bodyLeft < 0 || (f.StreamEnded() && st.bodyLeft > 0) {
			err := fmt.Errorf("h2client: response body does not match content-length %d", st.resp.ContentLength)
			if f.StreamEnded() {
				// The stream is over: fail it without a reset.
				st.reset = true
				st.failLocked(err)
				credit := st.discardLocked()
				c.recv.Owe(flow)
				c.removeLocked(st)
				c.mu.Unlock()
				c.creditConn(credit)
				return nil
			}
			c.mu.Unlock()
			c.resetFromServer(id, http2.ErrCodeProtocol, err)
			return nil
		}
	}
	st.buf = append(st.buf, data...)
	if pad := flow - int64(len(data)); pad > 0 {
		// Padding is consumed at once.
		c.recv.Owe(pad)
		st.recv.Owe(pad)
	}
	if f.StreamEnded() {
		c.endRemoteLocked(st)
	} else {
		notify(st.rnotify)
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
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
		return nil
	}
	if st.send.Grow(inc) != nil {
		c.mu.Unlock()
		c.resetFromServer(f.StreamID, http2.ErrCodeFlowControl, errors.New("h2client: stream window overflow"))
		c.mu.Lock()
		return nil
	}
	return nil
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var hts *uint32
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.maxStreams = int(min(s.Val, 1<<20))
			c.mu.Unlock()
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
			v := s.Val
			hts = &v
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
	if hts != nil {
		c.henc.SetMaxDynamicTableSizeLimit(*hts)
	}
	_ = c.w.Framer.WriteSettingsAck()
	c.w.UnlockKick()
	return nil
}

// creditConn returns connection window from the reader goroutine (never
// blocking on the socket).
func (c *Conn) creditConn(n int64) {
	if n <= 0 {
		return
	}
	c.w.Lock()
	_ = c.w.Framer.WriteWindowUpdate(0, uint32(n))
	c.w.UnlockKick()
}
