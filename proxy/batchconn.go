package proxy

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"time"
)

// batchConn sits between x/net's ClientConn and the TLS connection to a
// peer. x/net writes and flushes every request's HEADERS under its write
// lock, one TLS record and one syscall each, so 64 concurrent requests queue
// behind 64 syscalls. batchConn makes Write a copy into a buffer; one writer
// goroutine sends whatever has accumulated, so frames written while a
// syscall is in progress leave together in the next one. Writes block only
// when maxBatchPending bytes are waiting (backpressure); a write error is
// sticky and returned by every later Write.
type batchConn struct {
	tc net.Conn // the *tls.Conn to the peer

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	spare   []byte
	err     error
	closing bool
	done    chan struct{}
}

const maxBatchPending = 1 << 20

// batchYieldBelow: a batch smaller than this waits for one scheduler round
// before it is written.
const batchYieldBelow = 32 << 10

func newBatchConn(tc net.Conn) *batchConn {
	b := &batchConn{tc: tc, done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.loop()
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for b.err == nil && !b.closing && len(b.buf) >= maxBatchPending {
		b.cond.Wait()
	}
	if b.err != nil || b.closing {
		err := b.err
		b.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	wake := len(b.buf) == 0
	b.buf = append(b.buf, p...)
	if wake {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	return len(p), nil
}

func (b *batchConn) loop() {
	defer close(b.done)
	b.mu.Lock()
	for {
		for len(b.buf) == 0 && b.err == nil && !b.closing {
			b.cond.Wait()
		}
		if b.err != nil || len(b.buf) == 0 { // closing and drained
			b.mu.Unlock()
			return
		}
		if len(b.buf) < batchYieldBelow && !b.closing {
			// Let the goroutines that are ready to run (handlers about to
			// write their frames) append before the syscall: one yield
			// costs far less than the write it saves.
			b.mu.Unlock()
			runtime.Gosched()
			b.mu.Lock()
		}
		out := b.buf
		b.buf = b.spare[:0]
		b.cond.Broadcast() // writers waiting for room
		b.mu.Unlock()
		_, err := b.tc.Write(out)
		b.mu.Lock()
		if cap(out) <= 4*maxBatchPending {
			b.spare = out[:0]
		}
		if err != nil {
			b.err = err
			b.cond.Broadcast()
		}
	}
}

// Close sends what is buffered (for at most a second: a GOAWAY written just
// before Close should still leave), then closes the TLS connection.
func (b *batchConn) Close() error {
	b.mu.Lock()
	b.closing = true
	b.cond.Broadcast()
	b.mu.Unlock()
	_ = b.tc.SetWriteDeadline(time.Now().Add(time.Second))
	<-b.done
	return b.tc.Close()
}

func (b *batchConn) Read(p []byte) (int, error)         { return b.tc.Read(p) }
func (b *batchConn) LocalAddr() net.Addr                { return b.tc.LocalAddr() }
func (b *batchConn) RemoteAddr() net.Addr               { return b.tc.RemoteAddr() }
func (b *batchConn) SetDeadline(t time.Time) error      { return b.tc.SetDeadline(t) }
func (b *batchConn) SetReadDeadline(t time.Time) error  { return b.tc.SetReadDeadline(t) }
func (b *batchConn) SetWriteDeadline(t time.Time) error { return b.tc.SetWriteDeadline(t) }

// ConnectionState lets x/net report the TLS state on responses.
func (b *batchConn) ConnectionState() tls.ConnectionState {
	if cs, ok := b.tc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return cs.ConnectionState()
	}
	return tls.ConnectionState{}
}
