package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/h2server"
	"github.com/meshguard/meshguard/internal/rawsock"
)

// Go's HTTP/1.1 server resolves a request carrying both Content-Length and
// Transfer-Encoding the way RFC 9112 allows (the coding wins, the length is
// dropped) and gives the handler no way to see that both were there. The
// DESIGN rule is stricter: such a request is refused. framingConn watches
// the plaintext HTTP/1.1 byte stream of one connection, just enough to find
// each request's header block and the end of its body, and queues one
// verdict per request; the handler pops the verdict of the request it
// serves (HTTP/1.1 requests on a connection are served in order).

// maxScanLine bounds one header or chunk-size line; longer lines make the
// scanner give up (fail closed: every later request is refused).
const maxScanLine = DefaultMaxHeaderBytes + 4096

type scanState uint8

const (
	scanHeaders scanState = iota
	scanBody
	scanChunkSize
	scanChunkData
	scanTrailers
	scanLost
)

// h1Scanner tracks HTTP/1.1 request framing on a byte stream.
type h1Scanner struct {
	st         scanState
	line       []byte
	remaining  int64
	started    bool // request line seen
	sawCL      bool
	sawTE      bool
	clConflict bool
	cl         int64
	chunked    bool

	mu       sync.Mutex
	verdicts []bool // per request, in order: true = refuse
	lost     bool
}

func (s *h1Scanner) feed(b []byte) {
	for len(b) > 0 {
		switch s.st {
		case scanLost:
			return
		case scanBody, scanChunkData:
			k := int64(len(b))
			if k > s.remaining {
				k = s.remaining
			}
			s.remaining -= k
			b = b[k:]
			if s.remaining == 0 {
				if s.st == scanBody {
					s.st = scanHeaders
				} else {
					s.st = scanChunkSize // the CRLF after the data reads as an empty line
				}
			}
		default:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				if len(s.line)+len(b) > maxScanLine {
					s.lose()
					return
				}
				s.line = append(s.line, b...)
				return
			}
			if len(s.line)+i > maxScanLine {
				s.lose()
				return
			}
			s.line = append(s.line, b[:i]...)
			b = b[i+1:]
			line := bytes.TrimSuffix(s.line, []byte{'\r'})
			s.onLine(line)
			s.line = s.line[:0]
		}
	}
}

func (s *h1Scanner) onLine(line []byte) {
	switch s.st {
	case scanHeaders:
		if !s.started {
			if len(line) == 0 {
				return // tolerate blank lines between requests
			}
			if bytes.HasPrefix(line, []byte("PRI * HTTP/2")) {
				s.lose() // h2c prior knowledge: HTTP/2 requests never ask
				return
			}
			s.started = true
			return
		}
		if len(line) > 0 {
			s.onHeader(line)
			return
		}
		// End of the header block.
		s.push(s.sawCL && s.sawTE || s.clConflict)
		switch {
		case s.sawTE && s.chunked:
			s.st = scanChunkSize
		case s.sawTE:
			s.lose() // a coding we cannot frame; Go refuses it too
		case s.sawCL && s.cl > 0:
			s.st, s.remaining = scanBody, s.cl
		}
		s.started, s.sawCL, s.sawTE, s.clConflict, s.cl, s.chunked = false, false, false, false, 0, false
	case scanChunkSize:
		if len(line) == 0 {
			return
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			s.lose()
			return
		}
		if n == 0 {
			s.st = scanTrailers
			return
		}
		s.st, s.remaining = scanChunkData, n
	case scanTrailers:
		if len(line) == 0 {
			s.st = scanHeaders
		}
	}
}

func (s *h1Scanner) onHeader(line []byte) {
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return
	}
	name := bytes.TrimSpace(line[:colon])
	value := bytes.TrimSpace(line[colon+1:])
	switch {
	case asciiEqualFold(name, "content-length"):
		n, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || n < 0 || s.sawCL && n != s.cl {
			s.clConflict = true
		}
		s.sawCL, s.cl = true, n
	case asciiEqualFold(name, "transfer-encoding"):
		s.sawTE = true
		s.chunked = asciiEqualFold(value, "chunked")
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// maxVerdicts bounds the queue of verdicts not yet asked for (pipelined
// requests read ahead of the handler); past it the scanner gives up.
const maxVerdicts = 256

func (s *h1Scanner) push(refuse bool) {
	s.mu.Lock()
	full := len(s.verdicts) >= maxVerdicts
	if !full {
		s.verdicts = append(s.verdicts, refuse)
	}
	s.mu.Unlock()
	if full {
		s.lose()
	}
}

func (s *h1Scanner) lose() {
	s.st = scanLost
	s.line = nil
	s.mu.Lock()
	s.lost = true
	s.mu.Unlock()
}

// refuse pops the verdict for the next request served on this connection.
// With no verdict queued (the scanner lost track) it refuses: fail closed.
func (s *h1Scanner) refuse() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.verdicts) == 0 {
		return true
	}
	v := s.verdicts[0]
	s.verdicts = s.verdicts[1:]
	return v
}

// framingConn is a connection whose plaintext bytes pass the scanner.
type framingConn struct {
	net.Conn
	tls  *tls.Conn // the TLS connection underneath, nil on plaintext listeners
	scan h1Scanner
}

func (c *framingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.scan.feed(b[:n])
	}
	return n, err
}

// connListener accepts connections, prepares each on its own goroutine
// (the TLS handshake on the inbound listener, a peek at the first bytes on
// the outbound one), then serves HTTP/2 connections itself with serveH2 and
// hands HTTP/1.1 ones to net/http through Accept, as framingConns (the
// plaintext bytes pass the HTTP/1.1 framing scanner). TLS state reaches
// handlers through the conn (ConnContext) instead of r.TLS.
type connListener struct {
	inner   net.Listener
	prepare func(ctx context.Context, raw net.Conn) (c *framingConn, h2 bool, err error)
	serveH2 func(c net.Conn)
	ready   chan net.Conn
	done    chan struct{}
	errc    chan error
	once    sync.Once
	wg      sync.WaitGroup
	timeout time.Duration
	onError func(remote net.Addr, err error)
	ctx     context.Context // canceled by Close: ends pending preparations
	cancel  context.CancelFunc
	slots   chan struct{} // bounds concurrent preparations
}

// maxPendingHandshakes bounds the handshakes (or first-byte peeks) in
// progress; past it new connections are closed at once (a slow-handshake
// flood costs no more).
const maxPendingHandshakes = 4096

// newTLSListener is the inbound and the public TLS listener: handshakes
// with conf and a deadline, then HTTP/2 (ALPN h2) to serveH2 and HTTP/1.1
// to net/http.
func newTLSListener(inner net.Listener, conf *tls.Config, timeout time.Duration, onError func(net.Addr, error), serveH2 func(net.Conn)) *connListener {
	prepare := func(ctx context.Context, raw net.Conn) (*framingConn, bool, error) {
		tc := tls.Server(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = tc.Close()
			return nil, false, err
		}
		h2 := tc.ConnectionState().NegotiatedProtocol == "h2"
		return &framingConn{Conn: tc, tls: tc}, h2, nil
	}
	return newConnListener(inner, prepare, timeout, onError, serveH2)
}

// newPlainListener is the outbound (and plaintext public) listener: h2c
// with prior knowledge (the
// connection starts with the HTTP/2 preface) to serveH2, anything else to
// net/http as HTTP/1.1.
func newPlainListener(inner net.Listener, timeout time.Duration, onError func(net.Addr, error), serveH2 func(net.Conn)) *connListener {
	prepare := func(ctx context.Context, raw net.Conn) (*framingConn, bool, error) {
		stop := context.AfterFunc(ctx, func() { _ = raw.SetReadDeadline(time.Now()) })
		br := bufio.NewReaderSize(raw, 64)
		// "PRI" starts only the HTTP/2 preface: no HTTP/1.1 method is PRI,
		// and every HTTP/1.1 request line is longer than three bytes (the
		// h2 server checks the rest of the preface).
		b, err := br.Peek(3)
		if !stop() || err != nil {
			_ = raw.Close()
			if err == nil {
				err = ctx.Err()
			}
			return nil, false, fmt.Errorf("read the first bytes: %w", err)
		}
		_ = raw.SetReadDeadline(time.Time{})
		c := h2server.WithPeeked(raw, br)
		if h2server.IsPreface(b) {
			return &framingConn{Conn: c}, true, nil
		}
		return &framingConn{Conn: c}, false, nil
	}
	return newConnListener(inner, prepare, timeout, onError, serveH2)
}

func newConnListener(inner net.Listener, prepare func(context.Context, net.Conn) (*framingConn, bool, error), timeout time.Duration, onError func(net.Addr, error), serveH2 func(net.Conn)) *connListener {
	l := &connListener{inner: inner, prepare: prepare, serveH2: serveH2, timeout: timeout, onError: onError,
		ready: make(chan net.Conn), done: make(chan struct{}), errc: make(chan error, 1),
		slots: make(chan struct{}, maxPendingHandshakes)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *connListener) acceptLoop() {
	defer l.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.errc <- err
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			l.onError(l.inner.Addr(), fmt.Errorf("accept: %w", err))
			select {
			case <-time.After(backoff):
			case <-l.done:
				l.errc <- net.ErrClosed
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case l.slots <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		l.wg.Add(1)
		go l.handle(c)
	}
}

func (l *connListener) handle(raw net.Conn) {
	defer l.wg.Done()
	raw = rawsock.Wrap(raw)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	c, h2, err := l.prepare(ctx, raw)
	cancel()
	<-l.slots
	if err != nil {
		l.onError(raw.RemoteAddr(), err)
		return
	}
	if h2 {
		l.serveH2(c)
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // keep reporting it
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections being served go on.
func (l *connListener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *connListener) Addr() net.Addr { return l.inner.Addr() }

// wait blocks until the accept loop, the preparations and the HTTP/2
// connections served here have ended.
func (l *connListener) wait() { l.wg.Wait() }
