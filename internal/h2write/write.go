// Package h2write is the write side of one HTTP/2 connection, shared by
// meshguard's server (internal/h2server) and client (internal/h2client).
//
// Frames are encoded under the writer's lock into a buffer; whoever
// unlocks after writing sends the buffer to the socket, unless another
// goroutine is already doing so, in which case that goroutine sends it
// after its current syscall. Frames written by many streams while one
// syscall is in progress thus leave together in the next one, with no
// writer goroutine to hand off to: at low load a stream's frames go out in
// its own goroutine's syscall (no wake-up of another thread), at high load
// one syscall carries many streams' frames.
//
// Goroutines that must never block on the socket (the one reading the
// connection, timers) unlock with UnlockKick instead: a short-lived
// goroutine flushes for them.
package h2write

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// MaxPending bounds the buffer while a flush is in progress: a goroutine
// that unlocks with more waiting blocks until the socket takes it
// (backpressure).
const MaxPending = 1 << 20

// yieldBelow: a flush of less than this first yields the processor once.
const yieldBelow = 32 << 10

// maxPendingControl is how much UnlockKick callers (acknowledgements,
// WINDOW_UPDATE, RST_STREAM) may queue on a connection whose peer does not
// read: past it the connection is closed.
const maxPendingControl = 4 * MaxPending

// ErrPeerNotReading is the write error after a peer stopped reading while
// control frames piled up.
var ErrPeerNotReading = errors.New("h2write: the peer does not read what is sent")

// Writer serializes frames onto one connection.
type Writer struct {
	nc net.Conn
	// Framer encodes frames into the buffer. Use it only between Lock and
	// one of the unlocks.
	Framer *http2.Framer

	mu       sync.Mutex
	cond     *sync.Cond // on mu: a flush finished or made room
	buf      []byte     // frames not yet handed to the socket
	spare    []byte     // the previous buf, reused
	flushing bool       // a goroutine is writing to the socket
	alone    bool       // set by Alone: the next flush does not yield first
	err      error      // sticky: the socket failed
}

// New returns a Writer for nc.
func New(nc net.Conn) *Writer {
	w := &Writer{nc: nc}
	w.cond = sync.NewCond(&w.mu)
	w.Framer = http2.NewFramer(sink{w}, nil)
	return w
}

// sink is the Framer's destination (called under mu).
type sink struct{ w *Writer }

func (s sink) Write(p []byte) (int, error) {
	w := s.w
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// WriteRaw queues bytes that are not a frame (the client preface). Call
// it under Lock.
func (w *Writer) WriteRaw(p []byte) {
	if w.err == nil {
		w.buf = append(w.buf, p...)
	}
}

// Alone tells the writer, under Lock, that no other stream of the
// connection is about to write: the flush that follows sends at once
// instead of first yielding the processor to let other streams' frames
// join the syscall. The yield costs a trip through the scheduler (and,
// with an idle processor, the wake-up of another thread), which at low
// load is all cost and no batching.
func (w *Writer) Alone() { w.alone = true }

// Lock takes the writer: frames may be written with Framer.
func (w *Writer) Lock() { w.mu.Lock() }

// Unlock releases the writer when nothing was written.
func (w *Writer) Unlock() { w.mu.Unlock() }

// Err returns the sticky write error. Call it under Lock.
func (w *Writer) Err() error { return w.err }

// UnlockFlush releases the writer and makes sure what was written reaches
// the socket: by writing it in this goroutine, or, when a flush is already
// running, by leaving it to that one (waiting while more than MaxPending
// is queued). It returns the connection's write error.
func (w *Writer) UnlockFlush() error {
	if w.flushing {
		w.alone = false // the running flush is another goroutine's
		for w.flushing && len(w.buf) >= MaxPending && w.err == nil {
			w.cond.Wait()
		}
		if !w.flushing && len(w.buf) > 0 && w.err == nil {
			w.flushLocked()
		}
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.flushLocked()
	err := w.err
	w.mu.Unlock()
	return err
}

// UnlockKick releases the writer without blocking on the socket (for the
// goroutine reading the connection: a peer that writes until it is read
// and only then reads must not deadlock it). A new goroutine flushes when
// none is running. A connection whose peer lets control frames pile up
// past a bound is closed.
func (w *Writer) UnlockKick() {
	if w.flushing || len(w.buf) == 0 || w.err != nil {
		if len(w.buf) > maxPendingControl && w.err == nil {
			w.err = ErrPeerNotReading
			w.cond.Broadcast()
			w.mu.Unlock()
			_ = w.nc.Close()
			return
		}
		w.mu.Unlock()
		return
	}
	w.flushing = true // reserved for the goroutine below
	w.mu.Unlock()
	go func() {
		w.mu.Lock()
		w.flushing = false
		w.flushLocked()
		w.mu.Unlock()
	}()
}

// flushLocked writes buf to the socket until it is empty, releasing mu
// during each syscall so that other goroutines can add frames meanwhile.
// Called with mu held and no flush running.
func (w *Writer) flushLocked() {
	w.flushing = true
	for len(w.buf) > 0 && w.err == nil {
		if len(w.buf) < yieldBelow && !w.alone {
			// Let the goroutines that are ready to run (other streams
			// about to write their frames) add them before the syscall:
			// a yield costs far less than the syscall it saves, and
			// returns at once when nothing else is runnable.
			w.mu.Unlock()
			runtime.Gosched()
			w.mu.Lock()
		}
		out := w.buf
		w.buf = w.spare[:0]
		// buf owns the spare array now: it must not be reused for
		// another buf while out is being written.
		w.spare = nil
		w.cond.Broadcast() // room for those waiting in UnlockFlush
		w.mu.Unlock()
		_, err := w.nc.Write(out)
		w.mu.Lock()
		if cap(out) <= 4*MaxPending {
			w.spare = out[:0]
		}
		if err != nil && w.err == nil {
			w.err = err
		}
	}
	w.flushing = false
	w.alone = false
	w.cond.Broadcast()
}

// Drain sends what is still queued, for at most d (a GOAWAY written just
// before the connection closes should leave). It sets nc's write deadline.
func (w *Writer) Drain(d time.Duration) {
	_ = w.nc.SetWriteDeadline(time.Now().Add(d))
	w.mu.Lock()
	for w.flushing && w.err == nil {
		w.cond.Wait()
	}
	if len(w.buf) > 0 && w.err == nil {
		w.flushLocked()
	}
	w.mu.Unlock()
}
