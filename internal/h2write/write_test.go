package h2write

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/leakcheck"
	"github.com/meshguard/meshguard/internal/testnet"
	"golang.org/x/net/http2"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// wait bounds anything a test waits for: never reached by a working
// Writer, it only bounds how long a broken one hangs.
const wait = 20 * time.Second

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) { return testnet.TCPPair(t) }

// noError waits up to wait for ch's result and fails the test on an error,
// or with late when nothing came.
func noError(t *testing.T, ch <-chan error, late string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal(late)
	}
}

// payload is the deterministic body of frame seq of writer g.
func payload(g, seq, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p, uint32(g))
	binary.BigEndian.PutUint32(p[4:], uint32(seq))
	for i := 8; i < size; i++ {
		p[i] = byte(g*31 + seq*7 + i)
	}
	return p
}

// slowReader hands out at most n bytes per Read.
type slowReader struct {
	r io.Reader
	n int
}

func (s slowReader) Read(p []byte) (int, error) {
	if len(p) > s.n {
		p = p[:s.n]
	}
	return s.r.Read(p)
}

// checkFrames reads DATA frames from r until every writer's want frames
// arrived: each on stream 2g+1, in order, intact. It returns the first
// problem found.
func checkFrames(r io.Reader, writers, want int, size func(g, seq int) int) error {
	fr := http2.NewFramer(nil, r)
	fr.SetMaxReadFrameSize(1<<24 - 1)
	next := make([]int, writers)
	left := writers * want
	for left > 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		df, ok := f.(*http2.DataFrame)
		if !ok {
			return errors.New("unexpected frame " + f.Header().String())
		}
		g := int(df.StreamID-1) / 2
		if g >= writers || df.StreamID%2 == 0 {
			return errors.New("unexpected stream in " + df.Header().String())
		}
		if next[g] >= want {
			return errors.New("too many frames on " + df.Header().String())
		}
		if exp := payload(g, next[g], size(g, next[g])); !bytes.Equal(df.Data(), exp) {
			return errors.New("frame corrupted or out of order: " + df.Header().String())
		}
		next[g]++
		left--
	}
	return nil
}

// TestConcurrentWriters: frames written by many goroutines (some unlocking
// with UnlockFlush, some with UnlockKick) all arrive intact, each
// goroutine's in order.
func TestConcurrentWriters(t *testing.T) {
	for _, tc := range []struct {
		name    string
		writers int
		frames  int
		size    func(g, seq int) int
		kick    func(g int) bool
		slow    bool // the peer reads 4 KiB at a time
		bufs    int  // socket buffer sizes, 0 = default
	}{
		{"small frames", 32, 300, func(g, seq int) int { return 8 + (g*seq)%200 }, func(int) bool { return false }, false, 0},
		{"mixed sizes", 16, 100, func(g, seq int) int { return 8 + (g*977+seq*4099)%40000 }, func(int) bool { return false }, false, 0},
		{"with kicks", 16, 200, func(g, seq int) int { return 8 + (g+seq)%1000 }, func(g int) bool { return g%2 == 0 }, false, 0},
		// Large frames from many writers to a slow peer: the buffer grows
		// well past MaxPending while flushes are in progress.
		{"slow peer large frames", 16, 8, func(g, seq int) int { return 128<<10 + g*1000 + seq }, func(int) bool { return false }, true, 64 << 10},
		{"slow peer small frames", 8, 500, func(g, seq int) int { return 8 + (g*seq)%3000 }, func(int) bool { return false }, true, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := tcpPair(t)
			if tc.bufs > 0 {
				_ = cc.SetWriteBuffer(tc.bufs)
				_ = sc.SetReadBuffer(tc.bufs)
			}
			w := New(cc)
			var r io.Reader = sc
			if tc.slow {
				r = slowReader{sc, 4096}
			}
			checked := make(chan error, 1)
			go func() { checked <- checkFrames(r, tc.writers, tc.frames, tc.size) }()

			var wg sync.WaitGroup
			errs := make(chan error, tc.writers)
			for g := range tc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for seq := range tc.frames {
						w.Lock()
						err := w.Framer.WriteData(uint32(2*g+1), false, payload(g, seq, tc.size(g, seq)))
						if err != nil {
							w.Unlock()
							errs <- err
							return
						}
						if tc.kick(g) {
							w.UnlockKick()
						} else if err := w.UnlockFlush(); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("write: %v", err)
			}
			// Kicked frames may still be queued: a final flush sends them.
			w.Lock()
			if err := w.UnlockFlush(); err != nil {
				t.Fatal(err)
			}
			noError(t, checked, "the peer did not receive every frame")
			w.Lock()
			err := w.Err()
			w.Unlock()
			if err != nil {
				t.Fatalf("Err() = %v", err)
			}
		})
	}
}

// TestBackpressure: a writer that unlocks with more than MaxPending queued
// behind a running flush waits for the socket; no data is lost.
func TestBackpressure(t *testing.T) {
	cc, sc := tcpPair(t)
	_ = cc.SetWriteBuffer(64 << 10)
	_ = sc.SetReadBuffer(64 << 10)
	w := New(cc)
	start := make(chan struct{})
	checked := make(chan error, 1)
	const writers, frames = 4, 40
	size := func(g, seq int) int { return 64<<10 + g + seq }
	go func() {
		<-start
		checked <- checkFrames(slowReader{sc, 16 << 10}, writers, frames, size)
	}()
	var wg sync.WaitGroup
	var maxSeen int
	var mu sync.Mutex
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range frames {
				w.Lock()
				_ = w.Framer.WriteData(uint32(2*g+1), false, payload(g, seq, size(g, seq)))
				mu.Lock()
				maxSeen = max(maxSeen, len(w.buf))
				mu.Unlock()
				if err := w.UnlockFlush(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// The peer starts reading only once the writers are blocked on it: a
	// flush is running and the queue is past MaxPending.
	deadline := time.Now().Add(wait)
	for {
		w.Lock()
		blocked := w.flushing && len(w.buf) >= MaxPending
		w.Unlock()
		if blocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writers never filled the queue")
		}
		time.Sleep(time.Millisecond) // polling a condition
	}
	close(start)
	wg.Wait()
	noError(t, checked, "the peer did not receive every frame")
	// Each writer adds at most one frame past the bound before waiting.
	if limit := MaxPending + writers*(size(writers, frames)+9); maxSeen > limit {
		t.Errorf("queue reached %d bytes, bound is %d", maxSeen, limit)
	}
}

// TestUnlockKickPeerNotReading: UnlockKick never blocks on a peer that does
// not read, and the connection is closed with ErrPeerNotReading once the
// queue passes the bound.
func TestUnlockKickPeerNotReading(t *testing.T) {
	cc, sc := tcpPair(t)
	_ = cc.SetWriteBuffer(8 << 10)
	_ = sc.SetReadBuffer(8 << 10)
	w := New(cc)
	chunk := make([]byte, 64<<10)
	done := make(chan error, 1)
	go func() {
		// Far more than the socket buffers and the bound hold: the loop
		// must end by the error.
		for i := 0; i < 100000; i++ {
			w.Lock()
			if err := w.Err(); err != nil {
				w.Unlock()
				done <- err
				return
			}
			_ = w.Framer.WriteData(1, false, chunk)
			w.UnlockKick()
		}
		done <- errors.New("no error after writing 6 GiB to a peer that does not read")
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrPeerNotReading) {
			t.Fatalf("Err() = %v, want ErrPeerNotReading", err)
		}
	case <-time.After(wait):
		t.Fatal("UnlockKick blocked on a peer that does not read")
	}
	// The connection is closed: writing on it fails, and the peer reads
	// the end of the stream after what was buffered.
	if _, err := cc.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on the conn after ErrPeerNotReading: %v, want net.ErrClosed", err)
	}
	_ = sc.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.Copy(io.Discard, sc); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("peer read: %v, want EOF", err)
	}
	// Later writers see the sticky error.
	w.Lock()
	ferr := w.Framer.WriteData(1, false, []byte("x"))
	err := w.UnlockFlush()
	if !errors.Is(ferr, ErrPeerNotReading) || !errors.Is(err, ErrPeerNotReading) {
		t.Errorf("after close: WriteData %v, UnlockFlush %v; want ErrPeerNotReading", ferr, err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestDrain: Drain sends frames left queued by Unlock.
func TestDrain(t *testing.T) {
	cc, sc := tcpPair(t)
	w := New(cc)
	w.Lock()
	w.WriteRaw([]byte(http2.ClientPreface))
	for i := range 10 {
		_ = w.Framer.WriteData(1, false, payload(0, i, 100))
	}
	_ = w.Framer.WriteGoAway(7, http2.ErrCodeNo, []byte("bye"))
	w.Unlock() // queued, not sent
	w.Drain(wait)
	_ = cc.Close()

	_ = sc.SetReadDeadline(time.Now().Add(wait))
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(sc, pre); err != nil || string(pre) != http2.ClientPreface {
		t.Fatalf("preface: %q, %v", pre, err)
	}
	fr := http2.NewFramer(nil, sc)
	for i := range 10 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		df, ok := f.(*http2.DataFrame)
		if !ok || !bytes.Equal(df.Data(), payload(0, i, 100)) {
			t.Fatalf("frame %d: %v", i, f)
		}
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.LastStreamID != 7 || string(ga.DebugData()) != "bye" {
		t.Fatalf("want GOAWAY, got %v", f)
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after GOAWAY: %v, want EOF", err)
	}
}

// TestDrainPeerNotReading: Drain gives up after its duration when the peer
// does not read; the error is then sticky.
func TestDrainPeerNotReading(t *testing.T) {
	cc, sc := tcpPair(t)
	_ = cc.SetWriteBuffer(8 << 10)
	_ = sc.SetReadBuffer(8 << 10)
	w := New(cc)
	w.Lock()
	chunk := make([]byte, 16<<10)
	for range 256 { // 4 MiB: more than the socket buffers hold
		_ = w.Framer.WriteData(1, false, chunk)
	}
	w.Unlock()
	done := make(chan struct{})
	go func() { w.Drain(50 * time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Drain did not return")
	}
	w.Lock()
	err := w.Err()
	w.Unlock()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Err() after Drain = %v, want a timeout", err)
	}
}

// TestStickyError: once a write fails, every later write and flush reports
// the same error and nothing more is queued.
func TestStickyError(t *testing.T) {
	cc, _ := tcpPair(t)
	w := New(cc)
	_ = cc.Close()
	w.Lock()
	if err := w.Framer.WritePing(false, [8]byte{1}); err != nil {
		t.Fatalf("first write (queued): %v", err)
	}
	err1 := w.UnlockFlush()
	if err1 == nil || !errors.Is(err1, net.ErrClosed) {
		t.Fatalf("UnlockFlush on a closed conn = %v", err1)
	}
	for range 3 {
		w.Lock()
		if err := w.Err(); err != err1 {
			t.Fatalf("Err() = %v, want %v", err, err1)
		}
		if err := w.Framer.WritePing(false, [8]byte{2}); err != err1 {
			t.Fatalf("WritePing after the error = %v, want %v", err, err1)
		}
		w.WriteRaw([]byte("raw"))
		if len(w.buf) != 0 {
			t.Fatalf("%d bytes queued after the error", len(w.buf))
		}
		if err := w.UnlockFlush(); err != err1 {
			t.Fatalf("UnlockFlush = %v, want %v", err, err1)
		}
	}
	w.Lock()
	w.UnlockKick() // must neither block nor panic
	w.Drain(time.Second)
}

// gateConn holds each Write until the test releases it.
type gateConn struct {
	net.Conn
	entered chan int // the length of a Write about to block
	release chan struct{}
}

func (g *gateConn) Write(p []byte) (int, error) {
	g.entered <- len(p)
	<-g.release
	return g.Conn.Write(p)
}

// TestBufferReuse: queues larger than the reused-buffer bound, between
// smaller ones, never let new frames overwrite bytes a flush is still
// sending. The flush's syscalls are held so that the sequence is exact:
// a small write, then 2 MiB queued (a buffer that is kept for reuse),
// then 5 MiB (one that is not), then 1 MiB, then more frames while that
// 1 MiB is being written.
func TestBufferReuse(t *testing.T) {
	cc, sc := tcpPair(t)
	gc := &gateConn{Conn: cc, entered: make(chan int, 1), release: make(chan struct{})}
	w := New(gc)
	const frameSize = 16 << 10
	seq := 0
	queue := func(bytes int) {
		w.Lock()
		for n := 0; n < bytes; n += frameSize + 9 {
			_ = w.Framer.WriteData(1, false, payload(0, seq, frameSize))
			seq++
		}
		w.Unlock()
	}
	entered := func() {
		t.Helper()
		select {
		case <-gc.entered:
		case <-time.After(wait):
			t.Fatal("no flush")
		}
	}
	type result struct {
		n   int
		err error
	}
	checked := make(chan result, 1)
	go func() {
		// Every frame in order and intact, until the end of the stream.
		fr := http2.NewFramer(nil, sc)
		n := 0
		for {
			f, err := fr.ReadFrame()
			if err == io.EOF {
				checked <- result{n, nil}
				return
			}
			if err != nil {
				checked <- result{n, err}
				return
			}
			df, ok := f.(*http2.DataFrame)
			if !ok || !bytes.Equal(df.Data(), payload(0, n, frameSize)) {
				checked <- result{n, fmt.Errorf("frame %d: corrupted or out of order", n)}
				return
			}
			n++
		}
	}()
	w.Lock()
	_ = w.Framer.WriteData(1, false, payload(0, seq, frameSize))
	seq++
	w.UnlockKick()
	entered()
	for _, n := range []int{2 << 20, 5 << 20, 1 << 20, 100 << 10} {
		queue(n) // behind the held write
		gc.release <- struct{}{}
		entered()
	}
	gc.release <- struct{}{}
	w.Drain(wait) // waits for the flush to end
	w.Lock()
	if len(w.buf) > 0 {
		t.Errorf("%d bytes queued after the last write", len(w.buf))
	}
	err := w.Err()
	w.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	_ = cc.Close()
	select {
	case r := <-checked:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.n != seq {
			t.Fatalf("%d frames received, %d sent", r.n, seq)
		}
	case <-time.After(wait):
		t.Fatal("the peer did not receive every frame")
	}
}

// recordingConn records the size of every Write that reaches the socket.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, len(p))
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// TestAlone: a flush yields first, so that a stream ready to run adds its
// frames to the same syscall; after Alone it sends at once. With one
// processor the second writer is runnable but runs only when the first
// yields. Not always then: every 61st scheduling round the runtime takes
// from its global queue first, where a yielding goroutine goes, so the
// yield case gets a few attempts (without the yield none would succeed).
func TestAlone(t *testing.T) {
	const frame = 9 + 100 // header + payload
	for _, tc := range []struct {
		name      string
		alone     bool
		wantFirst int // bytes in the first socket write
	}{
		{"yields to the other writer", false, 2 * frame},
		{"alone sends at once", true, frame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			attempts := 1
			if !tc.alone {
				attempts = 5
			}
			var writes []int
			for range attempts {
				writes = twoWriters(t, tc.alone)
				total := 0
				for _, n := range writes {
					total += n
				}
				if total != 2*frame {
					t.Fatalf("socket writes %v, want %d bytes in all", writes, 2*frame)
				}
				if writes[0] == tc.wantFirst {
					return
				}
			}
			t.Fatalf("socket writes %v, want %d bytes first", writes, tc.wantFirst)
		})
	}
}

// twoWriters has two goroutines write a frame each, the second started
// while the first holds the lock, and returns the sizes of the socket
// writes.
func twoWriters(t *testing.T, alone bool) []int {
	t.Helper()
	cc, sc := tcpPair(t)
	rc := &recordingConn{Conn: cc}
	w := New(rc)
	go func() { _, _ = io.Copy(io.Discard, sc) }()

	w.Lock()
	_ = w.Framer.WriteData(1, false, payload(0, 0, 100))
	second := make(chan error, 1)
	go func() {
		w.Lock()
		_ = w.Framer.WriteData(3, false, payload(1, 0, 100))
		second <- w.UnlockFlush()
	}()
	if alone {
		w.Alone()
	}
	if err := w.UnlockFlush(); err != nil {
		t.Fatal(err)
	}
	noError(t, second, "the second writer did not finish")
	w.Drain(wait) // the second frame may still be in flight
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]int(nil), rc.writes...)
}
