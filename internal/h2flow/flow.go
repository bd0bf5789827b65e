// Package h2flow is HTTP/2 flow control (RFC 9113 §5.2, §6.9), shared by
// meshguard's server (internal/h2server) and client (internal/h2client):
// the send windows a writer takes from and waits on, and the receive
// windows that are checked against what the peer sends and topped up with
// WINDOW_UPDATE.
//
// Nothing here locks: the owning connection's mutex guards every value,
// and a writer waits on the channel Take returns after releasing it.
package h2flow

import "errors"

// MaxWindow is the largest flow-control window (2^31-1).
const MaxWindow = 1<<31 - 1

// InitialWindow is every window's size until SETTINGS say otherwise.
const InitialWindow = 65535

// ErrOverflow: a WINDOW_UPDATE or a SETTINGS_INITIAL_WINDOW_SIZE change
// took a send window above MaxWindow (a FLOW_CONTROL_ERROR).
var ErrOverflow = errors.New("h2flow: flow-control window above 2^31-1")

// Send is a connection's send window and the streams waiting for it.
type Send struct {
	win     int64
	waiters []*SendStream
}

// NewSend returns a connection send window of InitialWindow.
func NewSend() Send { return Send{win: InitialWindow} }

// SendStream is one stream's send window.
type SendStream struct {
	win    int64
	notify chan struct{} // capacity 1; made by the first wait
}

// NewSendStream returns a stream send window of win (the peer's
// SETTINGS_INITIAL_WINDOW_SIZE).
func NewSendStream(win int64) SendStream { return SendStream{win: win} }

// Take takes up to want (> 0) bytes from both s's window and the
// connection's. With none available it returns 0 and a channel to wait on
// (without the lock) before trying again: it receives when a window may
// have grown or Wake was called.
func (c *Send) Take(s *SendStream, want int64) (int64, <-chan struct{}) {
	if n := min(want, s.win, c.win); n > 0 {
		s.win -= n
		c.win -= n
		return n, nil
	}
	if c.win <= 0 {
		c.waiters = append(c.waiters, s)
	}
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	return 0, s.notify
}

// Grow adds a connection WINDOW_UPDATE increment and wakes the streams
// waiting for the connection window. ErrOverflow leaves the window as it
// was.
func (c *Send) Grow(inc int64) error {
	if c.win+inc > MaxWindow {
		return ErrOverflow
	}
	c.win += inc
	for _, s := range c.waiters {
		s.Wake()
	}
	clear(c.waiters)
	c.waiters = c.waiters[:0]
	return nil
}

// Grow adds a stream WINDOW_UPDATE increment and wakes the stream's
// writer. ErrOverflow leaves the window as it was.
func (s *SendStream) Grow(inc int64) error {
	if s.win+inc > MaxWindow {
		return ErrOverflow
	}
	s.win += inc
	s.Wake()
	return nil
}

// Adjust applies a change of the peer's SETTINGS_INITIAL_WINDOW_SIZE to
// an open stream (the window may become negative, RFC 9113 §6.9.2).
// ErrOverflow leaves the window as it was.
func (s *SendStream) Adjust(delta int64) error { return s.Grow(delta) }

// Wake wakes the stream's writer waiting in Take (the window changed, or
// the stream ended and the writer must look again).
func (s *SendStream) Wake() {
	if s.notify == nil {
		return
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Recv is a receive window: what the peer may still send, and what the
// receiver consumed but has not yet returned with WINDOW_UPDATE.
type Recv struct {
	win     int64
	unacked int64
	every   int64
}

// NewRecv returns a receive window of size win that Credit tops up once
// size/share bytes are owed (share 2: at half the window).
func NewRecv(win int64, share int64) Recv {
	return Recv{win: win, every: max(1, win/share)}
}

// Take records n received bytes; false when they exceed the window (the
// peer broke flow control; nothing is recorded).
func (r *Recv) Take(n int64) bool {
	if n > r.win {
		return false
	}
	r.win -= n
	return true
}

// Owe records n consumed bytes without returning them yet (the next
// Credit does).
func (r *Recv) Owe(n int64) { r.unacked += n }

// Credit returns n consumed bytes to the window and reports the
// WINDOW_UPDATE increment now due (0 until a share of the window is owed).
func (r *Recv) Credit(n int64) int64 {
	r.unacked += n
	if r.unacked < r.every {
		return 0
	}
	inc := r.unacked
	r.unacked = 0
	r.win += inc
	return inc
}
