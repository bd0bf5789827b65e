package rawsock

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/leakcheck"
	"github.com/meshguard/meshguard/internal/testnet"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// pair returns both ends of a loopback TCP connection; the first is
// wrapped when wrap is set.
func pair(t *testing.T, wrap bool) (net.Conn, *net.TCPConn) {
	t.Helper()
	c, peer := testnet.TCPPair(t)
	if !wrap {
		return c, peer
	}
	w := Wrap(c)
	if _, plain := w.(*net.TCPConn); plain && runtime.GOOS == "linux" {
		t.Fatal("Wrap returned the *net.TCPConn itself on linux")
	}
	return w, peer
}

func TestWrapLeavesOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a net.Pipe conn")
	}
}

// TestBulk moves 8 MiB each way at once: the writes fill the socket
// buffers (EAGAIN, partial writes, the poller's wait) while the other
// side reads in odd-sized pieces.
func TestBulk(t *testing.T) {
	c, peer := pair(t, true)
	const size = 8 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	readAll := func(r io.Reader, want []byte, what string) {
		defer wg.Done()
		got := make([]byte, 0, len(want))
		buf := make([]byte, 7919)
		for len(got) < len(want) {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				errs <- errors.New(what + ": " + err.Error())
				return
			}
		}
		if !bytes.Equal(got, want) {
			errs <- errors.New(what + ": bytes differ")
		}
	}
	writeAll := func(w io.Writer, p []byte, what string) {
		defer wg.Done()
		for len(p) > 0 { // in uneven pieces, some larger than the socket buffer
			k := min(len(p), 3<<20+17)
			n, err := w.Write(p[:k])
			if err != nil || n != k {
				errs <- errors.New(what + ": short write")
				return
			}
			p = p[k:]
		}
	}
	wg.Add(4)
	go writeAll(c, up, "wrapped write")
	go readAll(peer, up, "peer read")
	go writeAll(peer, down, "peer write")
	go readAll(c, down, "wrapped read")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// outcome is what a scenario observed, compared between a wrapped and a
// plain connection.
type outcome struct {
	n          int
	eof        bool
	timeout    bool
	deadline   bool // errors.Is(err, os.ErrDeadlineExceeded)
	closed     bool // errors.Is(err, net.ErrClosed)
	reset      bool // errors.Is(err, syscall.ECONNRESET) or EPIPE
	opErr      bool // a *net.OpError
	op         string
	nilErr     bool
	shortWrite bool
}

func observe(n int, err error) outcome {
	o := outcome{n: n, nilErr: err == nil, eof: err == io.EOF}
	if err != nil {
		var ne net.Error
		o.timeout = errors.As(err, &ne) && ne.Timeout()
		o.deadline = errors.Is(err, os.ErrDeadlineExceeded)
		o.closed = errors.Is(err, net.ErrClosed)
		o.reset = errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
		var oe *net.OpError
		if errors.As(err, &oe) {
			o.opErr, o.op = true, oe.Op
		}
	}
	return o
}

// TestSameAsNetConn runs each scenario on a plain *net.TCPConn and on a
// wrapped one: callers that inspect errors (EOF, timeouts, closed, reset)
// must see no difference.
func TestSameAsNetConn(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome
	}{
		{"read data", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			peer.Write([]byte("hello"))
			buf := make([]byte, 16)
			return observe(c.Read(buf))
		}},
		{"read after peer closed", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			peer.Close()
			return observe(c.Read(make([]byte, 16)))
		}},
		{"read past deadline", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			c.SetReadDeadline(time.Now().Add(-time.Second))
			return observe(c.Read(make([]byte, 16)))
		}},
		{"read hits deadline while waiting", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			return observe(c.Read(make([]byte, 16)))
		}},
		{"read on closed conn", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			c.Close()
			return observe(c.Read(make([]byte, 16)))
		}},
		{"close during read", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			done := make(chan outcome, 1)
			go func() { done <- observe(c.Read(make([]byte, 16))) }()
			// The reader may not be waiting yet: whichever way, it ends
			// with net.ErrClosed.
			c.Close()
			return <-done
		}},
		{"read after reset", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			peer.SetLinger(0)
			peer.Close() // RST
			buf := make([]byte, 16)
			for deadline := time.Now().Add(5 * time.Second); ; {
				n, err := c.Read(buf)
				if err != nil || time.Now().After(deadline) {
					return observe(n, err)
				}
			}
		}},
		{"zero-length read", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			return observe(c.Read(nil))
		}},
		{"write", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			o := observe(c.Write([]byte("hello")))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "hello" {
				t.Errorf("peer got %q, %v", buf, err)
			}
			return o
		}},
		{"zero-length write", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			return observe(c.Write(nil))
		}},
		{"write to a peer that does not read, until the deadline", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.Write(make([]byte, 64<<20))
			o := observe(0, err)
			o.shortWrite = n > 0 && n < 64<<20
			return o
		}},
		{"write on closed conn", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			c.Close()
			return observe(c.Write([]byte("x")))
		}},
		{"write after reset", func(t *testing.T, c net.Conn, peer *net.TCPConn) outcome {
			peer.SetLinger(0)
			peer.Close()
			for deadline := time.Now().Add(5 * time.Second); ; {
				n, err := c.Write([]byte("x"))
				if err != nil || time.Now().After(deadline) {
					o := observe(n, err)
					o.n = 0 // 0 or 1 depending on when the RST lands
					return o
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t, false)
			want := tc.run(t, c, peer)
			c, peer = pair(t, true)
			got := tc.run(t, c, peer)
			if got != want {
				t.Errorf("wrapped conn: %+v\nnet.TCPConn:  %+v", got, want)
			}
		})
	}
}

// TestConcurrentReadersAndWriters: several goroutines share one wrapped
// conn (as TLS's reader and writer, and h2's flushers, do); every byte
// arrives once.
func TestConcurrentReadersAndWriters(t *testing.T) {
	c, peer := pair(t, true)
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte{byte('a' + i)}
			for range each {
				if _, err := c.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	counts := make([]int, writers)
	buf := make([]byte, 1024)
	for total := 0; total < writers*each; {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range buf[:n] {
			counts[b-'a']++
		}
		total += n
	}
	wg.Wait()
	for i, n := range counts {
		if n != each {
			t.Errorf("writer %d: %d bytes arrived, want %d", i, n, each)
		}
	}
}

// TestKeepsTCPMethods: the wrapper is still a TCP connection to code that
// half-closes or sets socket options.
func TestKeepsTCPMethods(t *testing.T) {
	c, peer := pair(t, true)
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("wrapped conn lost CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite: %d, %v; want EOF", n, err)
	}
	if _, err := peer.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still open" {
		t.Fatalf("read after our CloseWrite: %q, %v", buf, err)
	}
}

func BenchmarkPingPong(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "net.TCPConn"
		if wrap {
			name = "rawsock"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				defer s.Close()
				buf := make([]byte, 64)
				for {
					n, err := s.Read(buf)
					if err != nil {
						return
					}
					if _, err := s.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if wrap {
				c = Wrap(c)
			}
			msg, buf := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
