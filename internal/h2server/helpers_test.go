package h2server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/leakcheck"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// wait is the deadline for anything a test waits for: long enough never to
// be reached by a working server, it only bounds how long a broken one hangs.
const wait = 20 * time.Second

// testServer is a Server behind a loopback listener, each accepted
// connection served by ServeConn.
type testServer struct {
	t      *testing.T
	s      *Server
	ln     net.Listener
	addr   string
	wg     sync.WaitGroup
	wrap   func(net.Conn) net.Conn // optional, applied to accepted conns
	served chan struct{}           // one value per ServeConn that returned
}

func newTestServer(t *testing.T, cfg Config, opts ...func(*testServer)) *testServer {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, s: s, ln: ln, addr: ln.Addr().String(), served: make(chan struct{}, 1024)}
	for _, o := range opts {
		o(ts)
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if ts.wrap != nil {
				nc = ts.wrap(nc)
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				s.ServeConn(context.Background(), nc)
				ts.served <- struct{}{}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.Close()
		done := make(chan struct{})
		go func() { ts.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			t.Error("ServeConn did not return after Close")
		}
	})
	return ts
}

// waitServed waits for one ServeConn to return.
func (ts *testServer) waitServed() {
	ts.t.Helper()
	select {
	case <-ts.served:
	case <-time.After(wait):
		ts.t.Fatal("ServeConn did not return")
	}
}

// client returns an HTTP/2 (h2c) client of ts.
func (ts *testServer) client() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	ts.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// rawConn is a hand-driven HTTP/2 client connection.
type rawConn struct {
	t      *testing.T
	nc     net.Conn
	fr     *http2.Framer // write side
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	frames chan http2.Frame // closed when the connection ends
	more   chan struct{}    // the frame last returned by next is no longer used
	held   bool             // next returned a frame the reader waits to reuse
	done   chan struct{}
	err    error // read error, valid once frames is closed
}

// dialRaw connects without sending anything.
func dialRaw(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{t: t, nc: nc, frames: make(chan http2.Frame), more: make(chan struct{}), done: make(chan struct{})}
	rc.fr = http2.NewFramer(nc, nil)
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	rfr := http2.NewFramer(nil, nc)
	rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rfr.MaxHeaderListSize = 1 << 20
	rfr.SetMaxReadFrameSize(1<<24 - 1)
	go func() {
		defer close(rc.frames)
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				rc.err = err
				return
			}
			// The Framer reuses a frame's memory on the next ReadFrame:
			// hand each one over and wait until the test is done with it.
			select {
			case rc.frames <- f:
			case <-rc.done:
				return
			}
			select {
			case <-rc.more:
			case <-rc.done:
				return
			}
		}
	}()
	t.Cleanup(rc.close)
	return rc
}

// newRaw connects, sends the preface and settings, and reads the server's
// SETTINGS (acknowledging it).
func newRaw(t *testing.T, ts *testServer, settings ...http2.Setting) *rawConn {
	t.Helper()
	rc := dialRaw(t, ts)
	rc.write([]byte(http2.ClientPreface))
	rc.check(rc.fr.WriteSettings(settings...))
	f := rc.next()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("first server frame %v, want SETTINGS", f)
	}
	rc.check(rc.fr.WriteSettingsAck())
	return rc
}

func (rc *rawConn) close() {
	select {
	case <-rc.done:
	default:
		close(rc.done)
	}
	_ = rc.nc.Close()
}

func (rc *rawConn) check(err error) {
	rc.t.Helper()
	if err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) write(b []byte) {
	rc.t.Helper()
	_, err := rc.nc.Write(b)
	rc.check(err)
}

// next returns the next frame; nil when the connection ended.
func (rc *rawConn) next() http2.Frame {
	rc.t.Helper()
	if rc.held {
		rc.held = false
		select {
		case rc.more <- struct{}{}:
		case <-rc.done:
		}
	}
	select {
	case f, ok := <-rc.frames:
		if !ok {
			return nil
		}
		rc.held = true
		return f
	case <-time.After(wait):
		rc.t.Fatal("no frame from the server")
		return nil
	}
}

// await skips frames until match accepts one; it fails the test if the
// connection ends first.
func (rc *rawConn) await(what string, match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f := rc.next()
		if f == nil {
			rc.t.Fatalf("connection ended (%v) while waiting for %s", rc.err, what)
		}
		if match(f) {
			return f
		}
	}
}

// block encodes header fields given as name, value pairs.
func (rc *rawConn) block(kv ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = rc.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), rc.hbuf.Bytes()...)
}

// headers sends one HEADERS frame with the given fields.
func (rc *rawConn) headers(id uint32, end bool, kv ...string) {
	rc.t.Helper()
	rc.check(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(kv...), EndStream: end, EndHeaders: true}))
}

func reqFields(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", "http", ":authority", "example.test", ":path", path}, extra...)
}

// request opens stream id with a request for path.
func (rc *rawConn) request(id uint32, method, path string, end bool, extra ...string) {
	rc.t.Helper()
	rc.headers(id, end, reqFields(method, path, extra...)...)
}

func (rc *rawConn) data(id uint32, end bool, b []byte) {
	rc.t.Helper()
	rc.check(rc.fr.WriteData(id, end, b))
}

// ping checks that the connection still works: a PING is answered.
func (rc *rawConn) ping() {
	rc.t.Helper()
	p := [8]byte{'a', 'l', 'i', 'v', 'e', '?', '!', byte(time.Now().UnixNano())}
	rc.check(rc.fr.WritePing(false, p))
	rc.await("PING ACK", func(f http2.Frame) bool {
		pf, ok := f.(*http2.PingFrame)
		return ok && pf.IsAck() && pf.Data == p
	})
}

// expectReset waits for RST_STREAM on id and checks its code.
func (rc *rawConn) expectReset(id uint32, code http2.ErrCode) {
	rc.t.Helper()
	f := rc.await("RST_STREAM", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			return f.StreamID == id
		case *http2.MetaHeadersFrame, *http2.DataFrame:
			if f.Header().StreamID == id {
				rc.t.Errorf("stream %d: %v, want RST_STREAM %v", id, f, code)
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v, want RST_STREAM %v on stream %d", f.ErrCode, code, id)
		}
		return false
	}).(*http2.RSTStreamFrame)
	if f.ErrCode != code {
		rc.t.Fatalf("stream %d: RST_STREAM %v, want %v", id, f.ErrCode, code)
	}
	rc.quietAfterReset(id)
}

// readUntilReset collects what stream id sent before its RST_STREAM, and
// checks the reset's code.
func (rc *rawConn) readUntilReset(id uint32, code http2.ErrCode) *response {
	rc.t.Helper()
	r := &response{header: http.Header{}}
	for {
		switch f := rc.await("RST_STREAM", func(f http2.Frame) bool { return f.Header().StreamID == id }).(type) {
		case *http2.MetaHeadersFrame:
			r.status = f.PseudoValue("status")
		case *http2.DataFrame:
			r.body = append(r.body, f.Data()...)
			if f.StreamEnded() {
				rc.t.Fatalf("stream %d ended, want RST_STREAM %v", id, code)
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode != code {
				rc.t.Fatalf("stream %d: RST_STREAM %v, want %v", id, f.ErrCode, code)
			}
			rc.quietAfterReset(id)
			return r
		}
	}
}

// quietAfterReset checks that nothing more arrives on a reset stream (a
// PING round trip later).
func (rc *rawConn) quietAfterReset(id uint32) {
	rc.t.Helper()
	p := [8]byte{'q', 'u', 'i', 'e', 't', byte(id >> 16), byte(id >> 8), byte(id)}
	rc.check(rc.fr.WritePing(false, p))
	rc.await("PING ACK", func(f http2.Frame) bool {
		switch f.(type) {
		case *http2.MetaHeadersFrame, *http2.DataFrame:
			if f.Header().StreamID == id {
				rc.t.Fatalf("frame %v on stream %d after its RST_STREAM", f, id)
			}
		}
		pf, ok := f.(*http2.PingFrame)
		return ok && pf.IsAck() && pf.Data == p
	})
}

// expectGoAway waits for GOAWAY, checks its code, and, when closed, waits
// for the server to close the connection.
func (rc *rawConn) expectGoAway(code http2.ErrCode, closed bool) *http2.GoAwayFrame {
	rc.t.Helper()
	f := rc.await("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if f.ErrCode != code {
		rc.t.Fatalf("GOAWAY %v (%q), want %v", f.ErrCode, f.DebugData(), code)
	}
	if closed {
		rc.expectClosed()
	}
	return f
}

// expectClosed waits for the server to close the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	for f := rc.next(); f != nil; f = rc.next() {
		if _, ok := f.(*http2.DataFrame); ok {
			continue
		}
		if _, ok := f.(*http2.WindowUpdateFrame); ok {
			continue
		}
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			continue
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			continue
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
			continue
		}
		rc.t.Fatalf("frame %v while waiting for the connection to close", f)
	}
}

// response is what a raw client received on one stream.
type response struct {
	status   string
	header   http.Header
	body     []byte
	trailer  http.Header
	headerES bool // END_STREAM on the response HEADERS
	nData    int  // DATA frames
}

// readResponse collects stream id's response until END_STREAM; it fails
// on RST_STREAM or GOAWAY. Frames of other streams are dropped.
func (rc *rawConn) readResponse(id uint32) *response {
	rc.t.Helper()
	r := &response{header: http.Header{}}
	for {
		f := rc.next()
		if f == nil {
			rc.t.Fatalf("stream %d: connection ended (%v)", id, rc.err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			h := r.header
			if r.status != "" {
				r.trailer = http.Header{}
				h = r.trailer
			} else {
				r.status = f.PseudoValue("status")
				r.headerES = f.StreamEnded()
			}
			for _, hf := range f.RegularFields() {
				h.Add(hf.Name, hf.Value)
			}
			if f.StreamEnded() {
				return r
			}
		case *http2.DataFrame:
			if f.StreamID != id {
				continue
			}
			r.nData++
			r.body = append(r.body, f.Data()...)
			if f.StreamEnded() {
				return r
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				rc.t.Fatalf("stream %d: RST_STREAM %v", id, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo || f.LastStreamID < id {
				rc.t.Fatalf("stream %d: GOAWAY %v last %d", id, f.ErrCode, f.LastStreamID)
			}
		}
	}
}

// signal is a channel closed once.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }
func (s *signal) fire()  { s.once.Do(func() { close(s.ch) }) }

// waitFor waits for ch, failing the test after the deadline.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// logBuffer collects a Server's log output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// gateConn is a server-side conn whose writes can be made to block (as if
// the peer stopped reading) until the conn is closed.
type gateConn struct {
	net.Conn
	armed   atomic.Bool
	blocked *signal // fired when a write blocks
	closed  *signal
}

func (g *gateConn) Write(b []byte) (int, error) {
	if g.armed.Load() {
		g.blocked.fire()
		<-g.closed.ch
		return 0, net.ErrClosed
	}
	return g.Conn.Write(b)
}

func (g *gateConn) Close() error {
	g.closed.fire()
	return g.Conn.Close()
}

// deadline bounds a wait in a select.
func deadline() <-chan time.Time { return time.After(wait) }
