package h2client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testnet"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// event is a frame the fake server read, copied out of the Framer.
type event struct {
	typ    http2.FrameType
	id     uint32
	flags  http2.Flags
	code   http2.ErrCode // RST_STREAM, GOAWAY
	last   uint32        // GOAWAY
	data   []byte
	fields []hpack.HeaderField
	ping   [8]byte
}

// fake is a scripted HTTP/2 server on one loopback TCP connection.
type fake struct {
	t      *testing.T
	nc     net.Conn
	fr     *http2.Framer // write side
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	events chan event // closed when the client's side ends
	done   chan struct{}
}

// newFake connects a client Conn to a fake server; the fake has read the
// preface and sent nothing.
func newFake(t *testing.T, cfg Config) (*fake, *Conn) {
	t.Helper()
	cc, nc := testnet.TCPPair(t)
	f := &fake{t: t, nc: nc, events: make(chan event, 1024), done: make(chan struct{})}
	f.fr = http2.NewFramer(nc, nil)
	f.henc = hpack.NewEncoder(&f.hbuf)
	c, err := New(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pre); err != nil || string(pre) != http2.ClientPreface {
		t.Fatalf("preface %q, %v", pre, err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	go f.read()
	t.Cleanup(func() {
		_ = c.Close()
		_ = nc.Close()
		<-f.done
		select {
		case <-c.readDone:
		case <-time.After(wait):
			t.Error("the read loop did not end")
		}
	})
	return f, c
}

func (f *fake) read() {
	defer close(f.done)
	defer close(f.events)
	rfr := http2.NewFramer(nil, f.nc)
	rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rfr.MaxHeaderListSize = 1 << 20
	rfr.SetMaxReadFrameSize(1<<24 - 1)
	for {
		fr, err := rfr.ReadFrame()
		if err != nil {
			return
		}
		ev := event{typ: fr.Header().Type, id: fr.Header().StreamID, flags: fr.Header().Flags}
		switch fr := fr.(type) {
		case *http2.MetaHeadersFrame:
			ev.typ = http2.FrameHeaders
			ev.fields = append([]hpack.HeaderField(nil), fr.Fields...)
		case *http2.DataFrame:
			ev.data = append([]byte(nil), fr.Data()...)
		case *http2.RSTStreamFrame:
			ev.code = fr.ErrCode
		case *http2.GoAwayFrame:
			ev.code, ev.last = fr.ErrCode, fr.LastStreamID
			ev.data = append([]byte(nil), fr.DebugData()...)
		case *http2.PingFrame:
			ev.ping = fr.Data
		}
		select {
		case f.events <- ev:
		case <-time.After(wait):
			return // the test stopped consuming
		}
	}
}

func (f *fake) check(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fake) settings(s ...http2.Setting) { f.t.Helper(); f.check(f.fr.WriteSettings(s...)) }

// block encodes header fields given as name, value pairs.
func (f *fake) block(kv ...string) []byte {
	f.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = f.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), f.hbuf.Bytes()...)
}

func (f *fake) headers(id uint32, end bool, kv ...string) {
	f.t.Helper()
	f.check(f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: f.block(kv...), EndStream: end, EndHeaders: true}))
}

// next returns the next frame the client sent, skipping SETTINGS, their
// acknowledgements, WINDOW_UPDATE and PING; ok is false once the client's
// side ended.
func (f *fake) next() (event, bool) {
	f.t.Helper()
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				return event{}, false
			}
			switch ev.typ {
			case http2.FrameSettings, http2.FrameWindowUpdate, http2.FramePing:
				continue
			}
			return ev, true
		case <-deadline():
			f.t.Fatal("timed out waiting for a frame from the client")
			return event{}, false
		}
	}
}

// request waits for a request's HEADERS (skipping resets of earlier
// streams) and returns its stream ID.
func (f *fake) request() uint32 {
	f.t.Helper()
	for {
		ev, ok := f.next()
		if ok && ev.typ == http2.FrameRSTStream {
			continue
		}
		if !ok || ev.typ != http2.FrameHeaders {
			f.t.Fatalf("want a request's HEADERS, got %v (open %v)", ev.typ, ok)
		}
		return ev.id
	}
}

// settingsAcked waits for the client's acknowledgement of SETTINGS.
func (f *fake) settingsAcked() {
	f.t.Helper()
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				f.t.Fatal("connection closed before the SETTINGS ack")
			}
			if ev.typ == http2.FrameSettings && ev.flags&http2.FlagSettingsAck != 0 {
				return
			}
		case <-deadline():
			f.t.Fatal("no SETTINGS ack")
		}
	}
}

// expectGoAway waits for a GOAWAY with code, then for the end of the
// connection.
func (f *fake) expectGoAway(code http2.ErrCode) {
	f.t.Helper()
	for {
		ev, ok := f.next()
		if !ok {
			f.t.Fatalf("connection ended without GOAWAY %v", code)
		}
		if ev.typ == http2.FrameGoAway {
			if ev.code != code {
				f.t.Fatalf("GOAWAY %v (%s), want %v", ev.code, ev.data, code)
			}
			break
		}
	}
	f.expectClosed()
}

// expectClosed waits for the end of the client's side.
func (f *fake) expectClosed() {
	f.t.Helper()
	for {
		if _, ok := f.next(); !ok {
			return
		}
	}
}

// expectReset waits for RST_STREAM on id with code.
func (f *fake) expectReset(id uint32, code http2.ErrCode) {
	f.t.Helper()
	for {
		ev, ok := f.next()
		if !ok {
			f.t.Fatalf("connection ended, want RST_STREAM %v on %d", code, id)
		}
		if ev.typ == http2.FrameRSTStream && ev.id == id {
			if ev.code != code {
				f.t.Fatalf("RST_STREAM %v on %d, want %v", ev.code, id, code)
			}
			return
		}
	}
}

// start sends a GET of path on c; its result arrives on the channel.
func start(t *testing.T, c *Conn, path string) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	req := newReq(t, context.Background(), "GET", path, nil)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		ch <- result{resp.Status + ":" + string(b), err}
	}()
	return ch
}

// answerOK answers a request with 200 "ok" and expects it to arrive.
func answerOK(t *testing.T, f *fake, c *Conn) {
	t.Helper()
	res := start(t, c, "/ok")
	id := f.request()
	f.headers(id, false, ":status", "200")
	f.check(f.fr.WriteData(id, true, []byte("ok")))
	if r := recv(t, res); r.err != nil || r.body != "200 OK:ok" {
		t.Fatalf("request after the hostile one: %q, %v", r.body, r.err)
	}
}

func TestHostileServer(t *testing.T) {
	type outcome int
	const (
		usable    outcome = iota // the request fails, the connection serves the next one
		connError                // GOAWAY with code, then closed
		closed                   // closed without a required GOAWAY
	)
	for _, tc := range []struct {
		name    string
		cfg     Config
		noStart bool // the script sends the first SETTINGS itself
		script  func(f *fake, id uint32)
		notSent bool   // the request's error wraps ErrNotSent
		ok      string // the request succeeds with this status and body
		then    outcome
		code    http2.ErrCode
	}{
		{
			name:    "REFUSED_STREAM",
			script:  func(f *fake, id uint32) { f.check(f.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)) },
			notSent: true, then: usable,
		},
		{
			name:   "RST_STREAM INTERNAL_ERROR",
			script: func(f *fake, id uint32) { f.check(f.fr.WriteRSTStream(id, http2.ErrCodeInternal)) },
			then:   usable,
		},
		{
			name: "RST_STREAM REFUSED_STREAM after the headers",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200")
				f.check(f.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream))
			},
			then: usable,
		},
		{
			name:    "GOAWAY below the stream",
			script:  func(f *fake, id uint32) { f.check(f.fr.WriteGoAway(0, http2.ErrCodeNo, nil)) },
			notSent: true, then: closed,
		},
		{
			name:    "first frame not SETTINGS",
			noStart: true,
			script:  func(f *fake, id uint32) { f.check(f.fr.WritePing(false, [8]byte{})) },
			then:    connError, code: http2.ErrCodeProtocol,
		},
		{
			name:    "first frame a SETTINGS ack",
			noStart: true,
			script:  func(f *fake, id uint32) { f.check(f.fr.WriteSettingsAck()) },
			then:    connError, code: http2.ErrCodeProtocol,
		},
		{
			name: "DATA beyond the connection window",
			cfg:  Config{ConnWindow: 65535, StreamWindow: 1 << 20},
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200")
				// One frame larger than the window (the client, reading
				// the body, may widen the window between smaller ones),
				// and the last one sent: nothing unread is left when the
				// client closes.
				f.check(f.fr.WriteData(id, false, make([]byte, 70000)))
			},
			then: connError, code: http2.ErrCodeFlowControl,
		},
		{
			name: "DATA beyond the stream window",
			cfg:  Config{StreamWindow: 65535},
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200")
				f.check(f.fr.WriteData(id, false, make([]byte, 70000)))
				f.expectReset(id, http2.ErrCodeFlowControl)
			},
			then: usable,
		},
		{
			name:   "HEADERS on an idle stream",
			script: func(f *fake, id uint32) { f.headers(id+10, true, ":status", "200") },
			then:   connError, code: http2.ErrCodeProtocol,
		},
		{
			name:   "HEADERS on a server stream",
			script: func(f *fake, id uint32) { f.headers(2, true, ":status", "200") },
			then:   connError, code: http2.ErrCodeProtocol,
		},
		{
			name:   "DATA on an idle stream",
			script: func(f *fake, id uint32) { f.check(f.fr.WriteData(id+10, true, []byte("x"))) },
			then:   connError, code: http2.ErrCodeProtocol,
		},
		{
			name:   "RST_STREAM on an idle stream",
			script: func(f *fake, id uint32) { f.check(f.fr.WriteRSTStream(id+10, http2.ErrCodeCancel)) },
			then:   connError, code: http2.ErrCodeProtocol,
		},
		{
			name: "PUSH_PROMISE",
			script: func(f *fake, id uint32) {
				f.check(f.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: f.block(":method", "GET", ":scheme", "https", ":authority", "127.0.0.1", ":path", "/p"), EndHeaders: true}))
			},
			then: connError, code: http2.ErrCodeProtocol,
		},
		{
			name:   "connection WINDOW_UPDATE past 2^31-1",
			script: func(f *fake, id uint32) { f.check(f.fr.WriteWindowUpdate(0, 1<<31-1)) },
			then:   connError, code: http2.ErrCodeFlowControl,
		},
		{
			name: "stream WINDOW_UPDATE past 2^31-1",
			script: func(f *fake, id uint32) {
				f.check(f.fr.WriteWindowUpdate(id, 1<<31-1))
				f.expectReset(id, http2.ErrCodeFlowControl)
			},
			then: usable,
		},
		{
			name: "SETTINGS_INITIAL_WINDOW_SIZE takes an open stream past 2^31-1",
			script: func(f *fake, id uint32) {
				f.check(f.fr.WriteWindowUpdate(id, 1<<31-1-65535))
				f.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
			},
			then: connError, code: http2.ErrCodeFlowControl,
		},
		{
			name: "status abc",
			script: func(f *fake, id uint32) {
				f.headers(id, true, ":status", "abc")
				f.expectReset(id, http2.ErrCodeProtocol)
			},
			then: usable,
		},
		{
			name: "status 99",
			script: func(f *fake, id uint32) {
				f.headers(id, true, ":status", "99")
				f.expectReset(id, http2.ErrCodeProtocol)
			},
			then: usable,
		},
		{
			name:   "status 2000",
			script: func(f *fake, id uint32) { f.headers(id, true, ":status", "2000") },
			then:   usable,
		},
		{
			name:   "no status",
			script: func(f *fake, id uint32) { f.headers(id, true, "x-a", "b") },
			then:   usable,
		},
		{
			name: "two content-lengths",
			script: func(f *fake, id uint32) {
				f.headers(id, true, ":status", "200", "content-length", "1", "content-length", "2")
			},
			then: usable,
		},
		{
			name: "header list too large",
			cfg:  Config{MaxHeaderBytes: 1024},
			script: func(f *fake, id uint32) {
				kv := []string{":status", "200"}
				for i := range 20 {
					kv = append(kv, fmt.Sprintf("x-h%d", i), strings.Repeat("b", 200))
				}
				f.headers(id, true, kv...)
				f.expectReset(id, http2.ErrCodeCancel)
			},
			then: usable,
		},
		{
			// One field longer than the whole list may be is refused by
			// x/net's HPACK decoder (its string length limit): a
			// connection error, not a stream error.
			name:   "header field longer than the list limit",
			cfg:    Config{MaxHeaderBytes: 1024},
			script: func(f *fake, id uint32) { f.headers(id, true, ":status", "200", "x-big", strings.Repeat("b", 4000)) },
			then:   connError, code: http2.ErrCodeCompression,
		},
		{
			name: "DATA before HEADERS",
			script: func(f *fake, id uint32) {
				f.check(f.fr.WriteData(id, true, []byte("x")))
				f.expectReset(id, http2.ErrCodeProtocol)
			},
			then: usable,
		},
		{
			name:   "101 Switching Protocols",
			script: func(f *fake, id uint32) { f.headers(id, false, ":status", "101") },
			then:   usable,
		},
		{
			name: "trailers with a pseudo-header",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200")
				f.headers(id, true, ":status", "200")
				f.expectReset(id, http2.ErrCodeProtocol)
			},
			then: usable,
		},
		{
			name: "100 Continue then 200",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "100")
				f.headers(id, false, ":status", "103", "link", "</x>")
				f.headers(id, false, ":status", "200", "content-length", "5")
				f.check(f.fr.WriteData(id, true, []byte("hello")))
			},
			ok: "200 OK:hello", then: usable,
		},
		{
			name: "DATA longer than content-length",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200", "content-length", "2")
				f.check(f.fr.WriteData(id, false, []byte("abc")))
				f.expectReset(id, http2.ErrCodeProtocol)
			},
			then: usable,
		},
		{
			name: "DATA shorter than content-length",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200", "content-length", "5")
				f.check(f.fr.WriteData(id, true, []byte("ab")))
			},
			then: usable,
		},
		{
			name: "trailers before the content-length is complete",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200", "content-length", "5")
				f.check(f.fr.WriteData(id, false, []byte("ab")))
				f.headers(id, true, "x-t", "1")
			},
			then: usable,
		},
		{
			name: "padded DATA",
			script: func(f *fake, id uint32) {
				f.headers(id, false, ":status", "200")
				f.check(f.fr.WriteDataPadded(id, false, []byte("ab"), make([]byte, 200)))
				f.check(f.fr.WriteDataPadded(id, true, []byte("cd"), make([]byte, 3)))
			},
			ok: "200 OK:abcd", then: usable,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, tc.cfg)
			if !tc.noStart {
				f.settings()
			}
			res := start(t, c, "/hostile")
			id := f.request()
			tc.script(f, id)
			r := recv(t, res)
			switch {
			case tc.ok != "":
				if r.err != nil || r.body != tc.ok {
					t.Fatalf("request: %q, %v; want %q", r.body, r.err, tc.ok)
				}
			case r.err == nil:
				t.Fatalf("request succeeded: %q", r.body)
			case tc.notSent != errors.Is(r.err, ErrNotSent):
				t.Fatalf("request error %v: wraps ErrNotSent %v, want %v", r.err, !tc.notSent, tc.notSent)
			}
			switch tc.then {
			case usable:
				answerOK(t, f, c)
				if st := c.State(); st.Closed || st.Closing {
					t.Fatalf("State = %+v", st)
				}
			case connError:
				f.expectGoAway(tc.code)
				waitUntil(t, "Closed", func() bool { return c.State().Closed })
			case closed:
				f.expectClosed()
				waitUntil(t, "Closed", func() bool { return c.State().Closed })
			}
			if st := c.State(); st.Closed {
				if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/", nil)); !errors.Is(err, ErrNotSent) {
					t.Errorf("RoundTrip on the closed connection = %v, want ErrNotSent", err)
				}
			}
		})
	}
}

// TestGoAwayKeepsLowerStreams: after a GOAWAY, streams at or below its last
// stream ID complete; those above fail with ErrNotSent; new requests are
// not sent; the connection closes when the last stream ends.
func TestGoAwayKeepsLowerStreams(t *testing.T) {
	f, c := newFake(t, Config{})
	f.settings()
	r1 := start(t, c, "/1")
	id1 := f.request()
	r2 := start(t, c, "/2")
	id2 := f.request()
	f.check(f.fr.WriteGoAway(id1, http2.ErrCodeNo, nil))
	if r := recv(t, r2); !errors.Is(r.err, ErrNotSent) {
		t.Fatalf("stream %d above the GOAWAY: %q, %v", id2, r.body, r.err)
	}
	waitUntil(t, "Closing", func() bool { return c.State().Closing })
	if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/3", nil)); !errors.Is(err, ErrNotSent) {
		t.Fatalf("new request after GOAWAY = %v", err)
	}
	f.headers(id1, false, ":status", "200")
	f.check(f.fr.WriteData(id1, true, []byte("one")))
	if r := recv(t, r1); r.err != nil || r.body != "200 OK:one" {
		t.Fatalf("stream below the GOAWAY: %q, %v", r.body, r.err)
	}
	f.expectClosed()
	waitUntil(t, "Closed", func() bool { return c.State().Closed })
}

// TestPingTimeout: a server that never answers PING loses the connection.
func TestPingTimeout(t *testing.T) {
	f, c := newFake(t, Config{PingInterval: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	f.settings()
	res := start(t, c, "/never")
	f.request()
	// Wait for the PING (next skips them, so read events directly).
	sawPing := false
	for !sawPing {
		select {
		case ev, ok := <-f.events:
			if !ok {
				t.Fatal("closed before a PING")
			}
			sawPing = ev.typ == http2.FramePing && ev.flags&http2.FlagPingAck == 0
		case <-deadline():
			t.Fatal("no PING")
		}
	}
	f.expectClosed()
	if r := recv(t, res); r.err == nil || !errors.Is(r.err, errPingTimeout) {
		t.Fatalf("request on a connection whose PING went unanswered: %q, %v", r.body, r.err)
	}
	if !c.State().Closed {
		t.Fatal("not Closed")
	}
}

// TestPingAnswered: a server that answers PINGs keeps the connection.
func TestPingAnswered(t *testing.T) {
	f, c := newFake(t, Config{PingInterval: 10 * time.Millisecond, PingTimeout: wait})
	f.settings()
	for range 3 {
		select {
		case ev, ok := <-f.events:
			if !ok {
				t.Fatal("connection closed")
			}
			if ev.typ == http2.FramePing && ev.flags&http2.FlagPingAck == 0 {
				f.check(f.fr.WritePing(true, ev.ping))
			}
		case <-deadline():
			t.Fatal("no PING")
		}
	}
	answerOK(t, f, c)
}

// TestServerPing: the client answers the server's PING.
func TestServerPing(t *testing.T) {
	f, c := newFake(t, Config{})
	f.settings()
	f.check(f.fr.WritePing(false, [8]byte{'a', 'b'}))
	for {
		select {
		case ev, ok := <-f.events:
			if !ok {
				t.Fatal("connection closed")
			}
			if ev.typ == http2.FramePing {
				if ev.flags&http2.FlagPingAck == 0 || ev.ping != [8]byte{'a', 'b'} {
					t.Fatalf("PING %v %q, want an ack of ab", ev.flags, ev.ping)
				}
				answerOK(t, f, c)
				return
			}
		case <-deadline():
			t.Fatal("no PING ack")
		}
	}
}

// TestSendFlowControl: the request body waits for the server's windows.
func TestSendFlowControl(t *testing.T) {
	f, c := newFake(t, Config{})
	f.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	f.settingsAcked()
	req := newReq(t, context.Background(), "POST", "/up", strings.NewReader(strings.Repeat("z", 100)))
	res := make(chan result, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		_ = resp.Body.Close()
		res <- result{body: resp.Status}
	}()
	id := f.request()
	got := 0
	for got < 100 {
		ev, ok := f.next()
		if !ok || ev.typ != http2.FrameData {
			t.Fatalf("want DATA, got %v", ev.typ)
		}
		got += len(ev.data)
		if got > 100 || (got%10 != 0 && ev.flags&http2.FlagDataEndStream == 0) {
			t.Fatalf("%d bytes sent with a window of 10 per grant", got)
		}
		if got < 100 {
			f.check(f.fr.WriteWindowUpdate(id, 10))
		}
	}
	ev, ok := f.next()
	if !ok || ev.typ != http2.FrameData || ev.flags&http2.FlagDataEndStream == 0 {
		t.Fatalf("want END_STREAM, got %v", ev)
	}
	f.headers(id, true, ":status", "204")
	if r := recv(t, res); r.err != nil || r.body != "204 No Content" {
		t.Fatalf("%q, %v", r.body, r.err)
	}
}

// TestRequestBodyLength: a request body longer or shorter than its
// ContentLength does not go out as a complete request: the server gets
// no more DATA than declared and a RST_STREAM CANCEL instead of
// END_STREAM.
func TestRequestBodyLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		cl   int64
	}{{"long", "abcdefghijkl", 5}, {"short", "abc", 10}} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, Config{})
			f.settings()
			req := newReq(t, context.Background(), "POST", "/b", strings.NewReader(tc.body))
			req.ContentLength = tc.cl
			errc := make(chan error, 1)
			go func() {
				resp, err := c.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			id := f.request()
			sent := 0
			for {
				ev, ok := f.next()
				if !ok {
					t.Fatal("connection ended")
				}
				if ev.id != id {
					continue
				}
				if ev.typ == http2.FrameData {
					sent += len(ev.data)
					if ev.flags&http2.FlagDataEndStream != 0 {
						t.Fatalf("END_STREAM after %d bytes with content-length %d", sent, tc.cl)
					}
					continue
				}
				if ev.typ != http2.FrameRSTStream || ev.code != http2.ErrCodeCancel {
					t.Fatalf("got %v %v, want RST_STREAM CANCEL", ev.typ, ev.code)
				}
				break
			}
			if int64(sent) > tc.cl {
				t.Fatalf("%d body bytes sent, content-length %d", sent, tc.cl)
			}
			if err := <-errc; err == nil {
				t.Fatal("RoundTrip succeeded")
			}
		})
	}
}
