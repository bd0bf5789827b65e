package h2server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// echoHandler answers every path the tests use over http2.Transport.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo":
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-Proto", r.Proto)
		_, _ = io.Copy(w, r.Body)
	case "/count":
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = fmt.Fprint(w, n)
	case "/hello":
		_, _ = io.WriteString(w, "hello")
	case "/204":
		w.WriteHeader(http.StatusNoContent)
		if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
			panic(fmt.Sprintf("Write on 204: %v", err))
		}
	case "/304":
		w.WriteHeader(http.StatusNotModified)
		_, _ = w.Write([]byte("x"))
	default:
		http.NotFound(w, r)
	}
}

func TestRequests(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
	c := ts.client()
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/hello", "", 200, "hello"},
		{"GET", "/echo?a=1", "", 200, ""},
		{"POST", "/echo?b=2", "ping pong", 200, "ping pong"},
		{"PUT", "/echo", strings.Repeat("x", 100000), 200, strings.Repeat("x", 100000)},
		{"GET", "/nope", "", 404, "404 page not found\n"},
		{"GET", "/204", "", 204, ""},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.url(tc.path), strings.NewReader(tc.body))
			if tc.body == "" {
				req.Body = nil
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || string(b) != tc.want {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, tc.status, tc.want)
			}
			if resp.ProtoMajor != 2 {
				t.Fatalf("proto %s", resp.Proto)
			}
			if tc.path == "/echo?b=2" {
				if resp.Header.Get("X-Method") != "POST" || resp.Header.Get("X-Query") != "b=2" || resp.Header.Get("X-Proto") != "HTTP/2.0" {
					t.Fatalf("header %v", resp.Header)
				}
			}
		})
	}
}

// TestNoBodyResponses: HEAD, 204 and 304 end with the HEADERS frame.
func TestNoBodyResponses(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
	rc := newRaw(t, ts)
	for i, tc := range []struct{ method, path, status string }{
		{"HEAD", "/hello", "200"},
		{"GET", "/204", "204"},
		{"GET", "/304", "304"},
		{"GET", "/hello", "200"}, // control: has a body
	} {
		id := uint32(2*i + 1)
		rc.request(id, tc.method, tc.path, true)
		r := rc.readResponse(id)
		if r.status != tc.status {
			t.Fatalf("%s %s: status %s", tc.method, tc.path, r.status)
		}
		wantBody := tc.method == "GET" && tc.status == "200"
		if wantBody != (len(r.body) > 0) || wantBody == r.headerES {
			t.Fatalf("%s %s: body %q, END_STREAM on HEADERS %v", tc.method, tc.path, r.body, r.headerES)
		}
		if wantBody && r.header.Get("content-length") != "5" {
			t.Fatalf("content-length %q", r.header.Get("content-length"))
		}
	}
}

// TestLargeBodies streams 8 MiB both ways at once: the response starts
// before the request body has been sent.
func TestLargeBodies(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
	c := ts.client()
	const size = 8 << 20
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(rand.Uint32())
	}
	pr, pw := io.Pipe()
	go func() {
		for b := src; len(b) > 0; {
			n := min(len(b), 1+rand.IntN(100000))
			if _, err := pw.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("POST", ts.url("/echo"), pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(src); n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echoed %d bytes, hash mismatch", n)
	}
}

func TestTrailers(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprintf(w, "%s|%s|%s", b, r.Trailer.Get("X-Req-A"), r.Trailer.Get("X-Req-B"))
		w.(http.Flusher).Flush() // trailers still work after a flush
		w.Header().Set("X-Declared", "d1")
		w.Header().Set(http.TrailerPrefix+"X-Prefixed", "p1")
	})})
	c := ts.client()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", ts.url("/"), pr)
	req.Trailer = http.Header{"X-Req-A": nil, "X-Req-B": nil}
	go func() {
		_, _ = io.WriteString(pw, "body")
		req.Trailer.Set("X-Req-A", "a1")
		req.Trailer.Set("X-Req-B", "b1")
		_ = pw.Close()
	}()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "body|a1|b1" {
		t.Fatalf("body %q: request trailers did not reach the handler", b)
	}
	if resp.Header.Get("X-Declared") != "" {
		t.Fatalf("declared trailer sent as a header: %v", resp.Header)
	}
	if resp.Trailer.Get("X-Declared") != "d1" || resp.Trailer.Get("X-Prefixed") != "p1" {
		t.Fatalf("response trailers %v", resp.Trailer)
	}
}

// TestUndeclaredRequestTrailers: trailers the request did not announce
// reach r.Trailer at EOF, and the reader goroutine does not write the
// request the handler holds while the handler looks at r.Trailer (-race).
func TestUndeclaredRequestTrailers(t *testing.T) {
	looked, trailersSent := newSignal(), newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before := r.Trailer != nil
		// Something of the handler's looks at r.Trailer while the
		// trailers arrive (without syscalls, which the race detector
		// takes as synchronisation).
		stop, peeked := make(chan struct{}), make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					peeked <- n
					return
				default:
					n += len(r.Trailer)
					runtime.Gosched()
				}
			}
		}()
		looked.fire()
		<-trailersSent.ch
		close(stop)
		<-peeked
		_, _ = io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%v %s", before, r.Trailer.Get("X-T"))
	})})
	rc := newRaw(t, ts)
	rc.request(1, "POST", "/", false)
	waitFor(t, looked.ch, "handler")
	rc.data(1, false, []byte("abc"))
	rc.headers(1, true, "x-t", "v")
	rc.ping() // the server read the trailers (frames are handled in order)
	trailersSent.fire()
	if r := rc.readResponse(1); string(r.body) != "false v" {
		t.Fatalf("body %q", r.body)
	}
}

func TestFlush(t *testing.T) {
	release := newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release.ch:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second")
	})})
	c := ts.client()
	resp, err := c.Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q, %v", buf, err)
	}
	release.fire()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestConcurrentRequests(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
	c := ts.client()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := strings.Repeat(strconv.Itoa(i), 1+i*50)
			resp, err := c.Post(ts.url("/echo"), "text/plain", strings.NewReader(want))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != want {
				errs <- fmt.Errorf("request %d: %d bytes, %v", i, len(b), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// flowClient tracks what the server may send a raw client and fails the
// test when DATA exceeds it.
type flowClient struct {
	*rawConn
	connWin int64
	strWin  map[uint32]int64
}

func (fc *flowClient) onData(f *http2.DataFrame) {
	fc.t.Helper()
	n := int64(f.Length)
	fc.connWin -= n
	fc.strWin[f.StreamID] -= n
	if fc.connWin < 0 || fc.strWin[f.StreamID] < 0 {
		fc.t.Fatalf("server sent past the window: conn %d stream %d", fc.connWin, fc.strWin[f.StreamID])
	}
}

func (fc *flowClient) grant(id uint32, n int64) {
	fc.t.Helper()
	if id == 0 {
		fc.connWin += n
	} else {
		fc.strWin[id] += n
	}
	fc.check(fc.fr.WriteWindowUpdate(id, uint32(n)))
}

func bigHandler(size int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i % 251)
		}
		_, _ = w.Write(b)
	}
}

// TestSendFlowControl: the server never sends more than the client's
// stream (1000) and connection (65535) windows, and sends the rest as
// WINDOW_UPDATEs arrive.
func TestSendFlowControl(t *testing.T) {
	const size = 300000
	ts := newTestServer(t, Config{Handler: bigHandler(size)})
	fc := &flowClient{rawConn: newRaw(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000}), connWin: 65535, strWin: map[uint32]int64{}}
	fc.rawConn.await("SETTINGS ACK", func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && sf.IsAck() })
	var got [3][]byte
	for _, id := range []uint32{1, 3, 5} {
		fc.strWin[id] = 1000
		fc.request(id, "GET", "/", true)
	}
	ended := 0
	for ended < 3 {
		f := fc.next()
		if f == nil {
			t.Fatalf("connection ended: %v", fc.err)
		}
		df, ok := f.(*http2.DataFrame)
		if !ok {
			if rf, ok := f.(*http2.RSTStreamFrame); ok {
				t.Fatalf("RST_STREAM %v", rf.ErrCode)
			}
			continue
		}
		fc.onData(df)
		got[df.StreamID/2] = append(got[df.StreamID/2], df.Data()...)
		if df.StreamEnded() {
			ended++
			continue
		}
		if fc.strWin[df.StreamID] == 0 {
			fc.grant(df.StreamID, 1000)
		}
		if fc.connWin == 0 {
			fc.grant(0, 65535)
		}
	}
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i % 251)
	}
	for i, b := range got {
		if !bytes.Equal(b, want) {
			t.Fatalf("stream %d: %d bytes, want %d", 2*i+1, len(b), size)
		}
	}
}

// TestInitialWindowChange: a SETTINGS_INITIAL_WINDOW_SIZE change applies
// to an open stream, down (window goes negative) and up.
func TestInitialWindowChange(t *testing.T) {
	ts := newTestServer(t, Config{Handler: bigHandler(10000)})
	fc := &flowClient{rawConn: newRaw(t, ts, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000}), connWin: 65535, strWin: map[uint32]int64{1: 1000}}
	fc.rawConn.await("SETTINGS ACK", func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && sf.IsAck() })
	fc.request(1, "GET", "/", true)
	total := 0
	readData := func(want int) {
		t.Helper()
		for total < want {
			df := fc.await("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
			fc.onData(df)
			total += len(df.Data())
		}
		if total != want {
			t.Fatalf("received %d, want %d", total, want)
		}
	}
	readData(1000)
	// Shrink: 1000 → 0 makes the stream window -1000.
	fc.check(fc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	fc.strWin[1] -= 1000
	fc.rawConn.await("SETTINGS ACK", func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && sf.IsAck() })
	fc.grant(1, 1500) // window 500
	readData(1500)
	// Grow: 0 → 3000 adds 3000.
	fc.check(fc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 3000}))
	fc.strWin[1] += 3000
	readData(4500)
	fc.grant(1, 5500)
	readData(10000)
}

// TestRecvStreamWindow: DATA past the stream window resets the stream
// with FLOW_CONTROL_ERROR; the connection lives on.
func TestRecvStreamWindow(t *testing.T) {
	ts := newTestServer(t, Config{StreamWindow: 16384, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never reads
	})})
	rc := newRaw(t, ts)
	rc.request(1, "POST", "/", false)
	rc.data(1, false, make([]byte, 16384))
	rc.data(1, false, []byte{1})
	rc.expectReset(1, http2.ErrCodeFlowControl)
	rc.ping()
}

// TestRecvConnWindow: DATA past the connection window is a connection error.
func TestRecvConnWindow(t *testing.T) {
	ts := newTestServer(t, Config{StreamWindow: 1 << 20, ConnWindow: 65535, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})})
	rc := newRaw(t, ts)
	rc.request(1, "POST", "/", false)
	rc.request(3, "POST", "/", false)
	rc.data(1, false, make([]byte, 16384))
	rc.data(1, false, make([]byte, 16384))
	rc.data(3, false, make([]byte, 16384))
	rc.data(3, false, make([]byte, 16383))
	rc.ping() // 65535: still fine
	rc.data(3, false, []byte{1})
	rc.expectGoAway(http2.ErrCodeFlowControl, true)
}

// TestLargeUpload: 50 MiB through small windows completes, so the server
// returns credit as the handler reads.
func TestLargeUpload(t *testing.T) {
	ts := newTestServer(t, Config{StreamWindow: 1 << 16, ConnWindow: 1 << 17, Handler: http.HandlerFunc(echoHandler)})
	c := ts.client()
	const size = 50 << 20
	resp, err := c.Post(ts.url("/count"), "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != strconv.Itoa(size) {
		t.Fatalf("server counted %q", b)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestUnreadBodyCredit: a handler that does not read its body holds the
// connection window only until it closes the body or returns.
func TestUnreadBodyCredit(t *testing.T) {
	for _, mode := range []string{"close", "return"} {
		t.Run(mode, func(t *testing.T) {
			started, proceed := newSignal(), newSignal()
			ts := newTestServer(t, Config{StreamWindow: 65535, ConnWindow: 65535, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/count" {
					echoHandler(w, r)
					return
				}
				started.fire()
				select {
				case <-proceed.ch:
				case <-r.Context().Done():
					return
				}
				if mode == "close" {
					_ = r.Body.Close()
					<-r.Context().Done()
				}
			})})
			rc := newRaw(t, ts)
			rc.request(1, "POST", "/hog", false)
			waitFor(t, started.ch, "handler")
			for range 3 {
				rc.data(1, false, make([]byte, 16384))
			}
			rc.data(1, false, make([]byte, 65535-3*16384)) // the whole connection window
			rc.ping()
			proceed.fire()
			credit := int64(0)
			for credit < 65535 {
				wu := rc.await("connection WINDOW_UPDATE", func(f http2.Frame) bool {
					wu, ok := f.(*http2.WindowUpdateFrame)
					return ok && wu.StreamID == 0
				}).(*http2.WindowUpdateFrame)
				credit += int64(wu.Increment)
			}
			// The credit lets another stream upload.
			rc.request(3, "POST", "/count", false)
			for range 3 {
				rc.data(3, false, make([]byte, 16384))
			}
			rc.data(3, true, make([]byte, 65535-3*16384))
			if r := rc.readResponse(3); string(r.body) != "65535" {
				t.Fatalf("upload after credit: %s %q", r.status, r.body)
			}
		})
	}
}

// TestMalformedRequests: requests RFC 9113 §8 calls malformed are reset
// with PROTOCOL_ERROR and the connection keeps serving.
func TestMalformedRequests(t *testing.T) {
	var calls atomic.Int32
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		_, _ = io.WriteString(w, "ok")
	})})
	type tc struct {
		name   string
		fields []string
		body   []string // DATA frames; the last carries END_STREAM
		called bool     // the handler may run (the error is in the body)
	}
	get := func(extra ...string) []string { return reqFields("GET", "/", extra...) }
	cases := []tc{
		{name: "connection", fields: get("connection", "keep-alive")},
		{name: "proxy-connection", fields: get("proxy-connection", "keep-alive")},
		{name: "upgrade", fields: get("upgrade", "websocket")},
		{name: "transfer-encoding", fields: get("transfer-encoding", "chunked")},
		{name: "keep-alive", fields: get("keep-alive", "timeout=5")},
		{name: "te gzip", fields: get("te", "gzip")},
		{name: "path a", fields: reqFields("GET", "a")},
		{name: "path NUL", fields: reqFields("GET", "/\x00")},
		{name: "no path", fields: []string{":method", "GET", ":scheme", "http", ":authority", "x"}},
		{name: "no method", fields: []string{":scheme", "http", ":authority", "x", ":path", "/"}},
		{name: "no scheme", fields: []string{":method", "GET", ":authority", "x", ":path", "/"}},
		{name: "scheme with a URL", fields: []string{":method", "GET", ":scheme", "http://evil.test/", ":authority", "x", ":path", "/"}},
		{name: "scheme with a space", fields: []string{":method", "GET", ":scheme", "ht tp", ":authority", "x", ":path", "/"}},
		{name: "scheme starting with a digit", fields: []string{":method", "GET", ":scheme", "1http", ":authority", "x", ":path", "/"}},
		{name: "scheme too long", fields: []string{":method", "GET", ":scheme", strings.Repeat("h", 33), ":authority", "x", ":path", "/"}},
		{name: "host differs from authority", fields: get("host", "admin.test")},
		{name: "two hosts", fields: []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "a.test", "host", "b.test"}},
		{name: "unknown pseudo", fields: get(":foo", "bar")},
		{name: "uppercase name", fields: get("X-Upper", "1")},
		{name: "protocol", fields: get(":protocol", "websocket")},
		{name: "content-length sign", fields: reqFields("POST", "/", "content-length", "+3"), body: []string{"abc"}},
		{name: "content-length negative", fields: reqFields("POST", "/", "content-length", "-1"), body: []string{""}},
		{name: "content-length conflict", fields: reqFields("POST", "/", "content-length", "3", "content-length", "4"), body: []string{"abc"}},
		{name: "content-length on END_STREAM headers", fields: reqFields("POST", "/", "content-length", "3")},
		{name: "content-length longer body", fields: reqFields("POST", "/", "content-length", "3"), body: []string{"ab", "cd"}, called: true},
		{name: "content-length shorter body", fields: reqFields("POST", "/", "content-length", "5"), body: []string{"ab", "cd"}, called: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := newRaw(t, ts)
			id := uint32(1)
			before := calls.Load()
			rc.headers(id, len(c.body) == 0, c.fields...)
			for i, b := range c.body {
				rc.data(id, i == len(c.body)-1, []byte(b))
			}
			rc.expectReset(id, http2.ErrCodeProtocol)
			rc.ping()
			if !c.called && calls.Load() != before {
				t.Fatal("the handler ran")
			}
			// The connection still serves.
			rc.request(id+2, "GET", "/", true)
			if r := rc.readResponse(id + 2); r.status != "200" || string(r.body) != "ok" {
				t.Fatalf("next request: %s %q", r.status, r.body)
			}
		})
	}
}

// TestHeaderListTooLarge: a header list past MaxHeaderBytes is answered
// 431 with a JSON body, without calling the handler.
func TestHeaderListTooLarge(t *testing.T) {
	var calls atomic.Int32
	ts := newTestServer(t, Config{MaxHeaderBytes: 16 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
	})})
	rc := newRaw(t, ts)
	fields := reqFields("GET", "/")
	for i := range 20 {
		fields = append(fields, fmt.Sprintf("x-big-%d", i), strings.Repeat("v", 1000))
	}
	rc.headers(1, true, fields...)
	r := rc.readResponse(1)
	if r.status != "431" || r.header.Get("content-type") != "application/json" {
		t.Fatalf("got %s %v", r.status, r.header)
	}
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil || v["error"] == nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if calls.Load() != 0 {
		t.Fatal("handler called")
	}
	rc.ping()
}

// TestContinuationFlood: header block fragments past the limit end the
// connection with PROTOCOL_ERROR.
func TestContinuationFlood(t *testing.T) {
	ts := newTestServer(t, Config{MaxHeaderBytes: 16 << 10, Handler: http.HandlerFunc(echoHandler)})
	rc := newRaw(t, ts)
	rc.check(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(reqFields("GET", "/", "x-a", strings.Repeat("a", 6000))...), EndStream: true}))
	rc.check(rc.fr.WriteContinuation(1, false, rc.block("x-b", strings.Repeat("b", 6000))))
	rc.check(rc.fr.WriteContinuation(1, false, rc.block("x-c", strings.Repeat("c", 6000))))
	rc.check(rc.fr.WriteContinuation(1, false, rc.block("x-d", "d")))
	rc.expectGoAway(http2.ErrCodeProtocol, true)
}

// TestConnectionErrors: protocol violations end the connection with GOAWAY
// and the right code.
func TestConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		code http2.ErrCode
		do   func(rc *rawConn)
	}{
		{"even stream ID", http2.ErrCodeProtocol, func(rc *rawConn) { rc.request(2, "GET", "/", true) }},
		{"DATA on idle stream", http2.ErrCodeProtocol, func(rc *rawConn) { rc.data(5, true, []byte("x")) }},
		{"RST_STREAM on idle stream", http2.ErrCodeProtocol, func(rc *rawConn) { rc.check(rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)) }},
		{"WINDOW_UPDATE on idle stream", http2.ErrCodeProtocol, func(rc *rawConn) { rc.check(rc.fr.WriteWindowUpdate(7, 1)) }},
		{"HEADERS on a closed stream", http2.ErrCodeStreamClosed, func(rc *rawConn) {
			rc.request(1, "GET", "/hello", true)
			rc.readResponse(1)
			rc.request(1, "GET", "/hello", true)
		}},
		{"PUSH_PROMISE", http2.ErrCodeProtocol, func(rc *rawConn) {
			rc.request(1, "POST", "/echo", false)
			rc.check(rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: rc.block(reqFields("GET", "/")...), EndHeaders: true}))
		}},
		{"WINDOW_UPDATE overflow", http2.ErrCodeFlowControl, func(rc *rawConn) {
			rc.check(rc.fr.WriteWindowUpdate(0, 1<<31-1))
		}},
		{"INITIAL_WINDOW_SIZE too large", http2.ErrCodeFlowControl, func(rc *rawConn) {
			rc.check(rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}))
		}},
		{"MAX_FRAME_SIZE too small", http2.ErrCodeProtocol, func(rc *rawConn) {
			rc.check(rc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1000}))
		}},
		{"frame too large", http2.ErrCodeFrameSize, func(rc *rawConn) {
			rc.request(1, "POST", "/echo", false)
			rc.data(1, false, make([]byte, 70000))
		}},
		{"CONTINUATION without HEADERS", http2.ErrCodeProtocol, func(rc *rawConn) {
			rc.check(rc.fr.WriteContinuation(1, true, rc.block("x", "y")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{MaxReadFrameSize: 65536, Handler: http.HandlerFunc(echoHandler)})
			rc := newRaw(t, ts)
			tc.do(rc)
			rc.expectGoAway(tc.code, true)
			ts.waitServed()
		})
	}
}

// TestBadStart: the connection must open with the preface and SETTINGS.
func TestBadStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(rc *rawConn)
	}{
		{"bad preface", func(rc *rawConn) { rc.write([]byte("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")) }},
		{"first frame PING", func(rc *rawConn) {
			rc.write([]byte(http2.ClientPreface))
			rc.check(rc.fr.WritePing(false, [8]byte{}))
		}},
		{"first frame SETTINGS ACK", func(rc *rawConn) {
			rc.write([]byte(http2.ClientPreface))
			rc.check(rc.fr.WriteSettingsAck())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
			rc := dialRaw(t, ts)
			tc.send(rc)
			if sf, ok := rc.next().(*http2.SettingsFrame); !ok || sf.IsAck() {
				t.Fatal("server did not start with SETTINGS")
			}
			rc.expectGoAway(http2.ErrCodeProtocol, true)
			ts.waitServed()
		})
	}
}

// TestRapidReset: streams opened and reset while their handlers are still
// running never run more than MaxConcurrentStreams handlers at once, and
// the client is cut off with ENHANCE_YOUR_CALM (CVE-2023-44487).
func TestRapidReset(t *testing.T) {
	var running, maxRunning, calls atomic.Int32
	release := newSignal()
	ts := newTestServer(t, Config{MaxConcurrentStreams: 4, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		n := running.Add(1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		<-release.ch // ignores cancellation, like a slow backend call
		running.Add(-1)
	})})
	defer release.fire()
	rc := newRaw(t, ts)
	for i := range 21 {
		id := uint32(2*i + 1)
		rc.request(id, "GET", "/", true)
		if i < 20 {
			rc.check(rc.fr.WriteRSTStream(id, http2.ErrCodeCancel))
		}
	}
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm, false)
	release.fire()
	rc.expectClosed()
	ts.waitServed() // every handler has returned
	if m := maxRunning.Load(); m > 4 {
		t.Fatalf("%d handlers ran at once", m)
	}
	if c := calls.Load(); c != 4 {
		t.Fatalf("%d handlers called, want the first 4", c)
	}
}

// TestRefusedStream: a stream past MaxConcurrentStreams is refused.
func TestRefusedStream(t *testing.T) {
	var started sync.WaitGroup
	started.Add(4)
	ts := newTestServer(t, Config{MaxConcurrentStreams: 4, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-r.Context().Done()
	})})
	rc := newRaw(t, ts)
	for id := uint32(1); id <= 7; id += 2 {
		rc.request(id, "GET", "/", true)
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	waitFor(t, done, "4 handlers")
	rc.request(9, "GET", "/", true)
	rc.expectReset(9, http2.ErrCodeRefusedStream)
	// Freeing a slot admits a new stream.
	rc.check(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	started.Add(1)
	rc.request(11, "GET", "/", true)
	done = make(chan struct{})
	go func() { started.Wait(); close(done) }()
	waitFor(t, done, "a fifth handler after a reset")
}

func TestStreamWindowUpdateOverflow(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })})
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/", true)
	rc.check(rc.fr.WriteWindowUpdate(1, 1<<31-1))
	rc.expectReset(1, http2.ErrCodeFlowControl)
	rc.ping()
}

func TestPing(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
	rc := newRaw(t, ts)
	for _, p := range [][8]byte{{}, {1, 2, 3, 4, 5, 6, 7, 8}, {0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0}} {
		rc.check(rc.fr.WritePing(false, p))
		f := rc.await("PING", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
		if !f.IsAck() || f.Data != p {
			t.Fatalf("PING %v → ack %v data %v", p, f.IsAck(), f.Data)
		}
	}
}

func TestHandlerPanic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		value  any
		logged bool
	}{
		{"panic", "boom", true},
		{"ErrAbortHandler", http.ErrAbortHandler, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			ts := newTestServer(t, Config{Logger: logs.logger(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/panic" {
					_, _ = io.WriteString(w, "partial")
					w.(http.Flusher).Flush()
					panic(tc.value)
				}
				echoHandler(w, r)
			})})
			rc := newRaw(t, ts)
			rc.request(1, "GET", "/panic", true)
			if r := rc.readUntilReset(1, http2.ErrCodeInternal); string(r.body) != "partial" {
				t.Fatalf("before the reset: %s %q", r.status, r.body)
			}
			rc.request(3, "GET", "/hello", true)
			if r := rc.readResponse(3); string(r.body) != "hello" {
				t.Fatalf("after panic: %s %q", r.status, r.body)
			}
			if got := strings.Contains(logs.String(), "boom"); got != tc.logged {
				t.Fatalf("panic logged %v, want %v; log:\n%s", got, tc.logged, logs.String())
			}
		})
	}
}

func TestClientResetCancelsHandler(t *testing.T) {
	started, canceled := newSignal(), newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.fire()
		<-r.Context().Done()
		canceled.fire()
	})})
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/", true)
	waitFor(t, started.ch, "handler")
	rc.check(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	waitFor(t, canceled.ch, "r.Context() canceled")
	rc.ping()
}

func TestGracefulShutdown(t *testing.T) {
	started, release := newSignal(), newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.fire()
		<-release.ch
		_, _ = io.WriteString(w, "done")
	})})
	defer release.fire()
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/", true)
	waitFor(t, started.ch, "handler")
	shut := make(chan error, 1)
	go func() { shut <- ts.s.Shutdown(context.Background()) }()
	ga := rc.expectGoAway(http2.ErrCodeNo, false)
	if ga.LastStreamID != 1 {
		t.Fatalf("GOAWAY last stream %d", ga.LastStreamID)
	}
	rc.request(3, "GET", "/", true)
	rc.expectReset(3, http2.ErrCodeRefusedStream)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	release.fire()
	if r := rc.readResponse(1); string(r.body) != "done" {
		t.Fatalf("in-flight request: %s %q", r.status, r.body)
	}
	rc.expectClosed()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-deadline():
		t.Fatal("Shutdown did not return")
	}
	// New connections are closed at once.
	rc2 := dialRaw(t, ts)
	rc2.expectClosed()
}

func TestShutdownExpired(t *testing.T) {
	started, canceled := newSignal(), newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.fire()
		<-r.Context().Done()
		canceled.fire()
	})})
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/", true)
	waitFor(t, started.ch, "handler")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, canceled.ch, "handler canceled")
	rc.expectClosed()
	ts.waitServed()
}

// TestShutdownStuckWriter: Shutdown honours its context even when a
// connection's writes are blocked (a peer that stopped reading).
func TestShutdownStuckWriter(t *testing.T) {
	var gc *gateConn
	accepted := newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gc.armed.Store(true)
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
	})}, func(ts *testServer) {
		ts.wrap = func(nc net.Conn) net.Conn {
			gc = &gateConn{Conn: nc, blocked: newSignal(), closed: newSignal()}
			accepted.fire()
			return gc
		}
	})
	rc := newRaw(t, ts)
	waitFor(t, accepted.ch, "accept")
	rc.request(1, "GET", "/", true)
	waitFor(t, gc.blocked.ch, "a blocked write")
	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- ts.s.Shutdown(ctx) }()
	cancel()
	select {
	case err := <-shut:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-deadline():
		_ = gc.Close() // unblock the server so the test can end
		t.Fatal("Shutdown ignored its context while a write was blocked")
	}
	ts.waitServed()
}

// TestShutdownWhileStarting: Shutdown racing a connection's start neither
// races (-race) nor sends anything before the server's SETTINGS.
func TestShutdownWhileStarting(t *testing.T) {
	for range 100 {
		ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler), GoAwayGrace: 1e6})
		rc := dialRaw(t, ts)
		go func() { _ = ts.s.Shutdown(context.Background()) }()
		_, _ = rc.nc.Write([]byte(http2.ClientPreface))
		if f := rc.next(); f != nil {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				t.Fatalf("first server frame %v", f)
			}
		}
		ts.waitServed()
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t, Config{IdleTimeout: 20e6, Handler: http.HandlerFunc(echoHandler)})
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/hello", true)
	rc.readResponse(1)
	rc.expectGoAway(http2.ErrCodeNo, true)
	ts.waitServed()
}

// TestPingTimeout: a peer that stops answering PINGs is closed; one that
// answers gets the next PING instead.
func TestPingTimeout(t *testing.T) {
	ts := newTestServer(t, Config{PingInterval: 20e6, PingTimeout: 20e6, Handler: http.HandlerFunc(echoHandler)})
	rc := newRaw(t, ts)
	isPing := func(f http2.Frame) bool { pf, ok := f.(*http2.PingFrame); return ok && !pf.IsAck() }
	p := rc.await("PING", isPing).(*http2.PingFrame)
	rc.check(rc.fr.WritePing(true, p.Data))
	rc.await("second PING", isPing) // still open after answering
	rc.expectClosed()               // not answering this one
	ts.waitServed()
}

func TestCloseEndsServeConn(t *testing.T) {
	started := newSignal()
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.fire()
		<-r.Context().Done()
	})})
	c := ts.client()
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get(ts.url("/"))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, started.ch, "handler")
	ts.s.Close()
	ts.waitServed()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("request succeeded after Close")
		}
	case <-deadline():
		t.Fatal("client not told")
	}
}

// TestRequestTimeout: with Config.RequestTimeout every request's context
// carries a deadline of at least that (at most 1/16 more) and ends with
// DeadlineExceeded; without it there is no deadline.
func TestRequestTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run(fmt.Sprint(timeout), func(t *testing.T) {
			var sent time.Time // before the request leaves the client
			ts := newTestServer(t, Config{RequestTimeout: timeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				dl, ok := r.Context().Deadline()
				switch {
				case timeout == 0 && ok:
					w.WriteHeader(500)
				case timeout == 0:
					w.WriteHeader(204)
				case !ok || time.Until(dl) > timeout+timeout/16 || dl.Before(sent.Add(timeout)):
					w.WriteHeader(500)
				default:
					<-r.Context().Done()
					if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
						w.WriteHeader(204)
					} else {
						w.WriteHeader(500)
					}
				}
			})})
			rc := newRaw(t, ts)
			sent = time.Now()
			rc.request(1, "GET", "/", true)
			if r := rc.readResponse(1); r.status != "204" {
				t.Fatalf("status %s, want 204", r.status)
			}
		})
	}
}

// TestRequestTimeoutSlots: streams opened together share a deadline slot,
// yet each ends on its own (a finished stream does not cancel the others)
// and each still times out with DeadlineExceeded.
func TestRequestTimeoutSlots(t *testing.T) {
	const timeout = 80 * time.Millisecond
	release := make(chan struct{})
	ts := newTestServer(t, Config{RequestTimeout: timeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			w.WriteHeader(200)
			return
		}
		<-release
		select {
		case <-r.Context().Done():
			if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
				w.WriteHeader(204)
				return
			}
		default:
		}
		w.WriteHeader(500)
	})})
	rc := newRaw(t, ts)
	rc.request(1, "GET", "/slow", true)
	rc.request(3, "GET", "/quick", true)
	if r := rc.readResponse(3); r.status != "200" {
		t.Fatalf("quick: status %s", r.status)
	}
	// The quick stream's end did not end the slow one's context; after
	// the timeout it has ended with DeadlineExceeded.
	time.AfterFunc(timeout+timeout/16+20*time.Millisecond, func() { close(release) })
	if r := rc.readResponse(1); r.status != "204" {
		t.Fatalf("slow: status %s, want 204 (context ended by the deadline only)", r.status)
	}
}

// TestHostHeader: a Host equal to :authority (host names compare without
// case) is accepted, and a lone Host stands in for a missing :authority.
func TestHostHeader(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host)
	})})
	cases := []struct {
		name   string
		fields []string
		want   string
	}{
		{"same as authority", reqFields("GET", "/", "host", "Example.TEST"), "example.test"},
		{"host only", []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "users.mesh"}, "users.mesh"},
		{"repeated, same", []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "users.mesh", "host", "USERS.mesh"}, "users.mesh"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := newRaw(t, ts)
			rc.headers(1, true, c.fields...)
			if r := rc.readResponse(1); r.status != "200" || string(r.body) != c.want {
				t.Fatalf("got %s %q, want 200 %q", r.status, r.body, c.want)
			}
		})
	}
}

// TestAdoptHeader: a handler can hand the writer a whole header map (as
// the proxy does with an upstream response); fields it set before are kept
// unless the map names them too, and after WriteHeader nothing is adopted.
func TestAdoptHeader(t *testing.T) {
	for _, tc := range []struct {
		name     string
		before   map[string]string // set through Header() first
		adopt    http.Header
		writeHdr bool // WriteHeader before AdoptHeader
		wantOK   bool
		want     map[string]string
	}{
		{name: "untouched writer", adopt: http.Header{"X-Up": {"1"}}, wantOK: true, want: map[string]string{"X-Up": "1"}},
		{name: "earlier field kept", before: map[string]string{"X-Mine": "a"}, adopt: http.Header{"X-Up": {"1"}}, wantOK: true, want: map[string]string{"X-Mine": "a", "X-Up": "1"}},
		{name: "adopted map wins on a clash", before: map[string]string{"X-Both": "mine"}, adopt: http.Header{"X-Both": {"up"}}, wantOK: true, want: map[string]string{"X-Both": "up"}},
		{name: "after WriteHeader: refused", before: map[string]string{"X-Mine": "a"}, adopt: http.Header{"X-Up": {"1"}}, writeHdr: true, wantOK: false, want: map[string]string{"X-Mine": "a", "X-Up": ""}},
		{name: "nil map: refused", before: map[string]string{"X-Mine": "a"}, adopt: nil, wantOK: false, want: map[string]string{"X-Mine": "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			okc := make(chan bool, 1)
			ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.before {
					w.Header().Set(k, v)
				}
				if tc.writeHdr {
					w.WriteHeader(http.StatusAccepted)
				}
				okc <- w.(interface{ AdoptHeader(http.Header) bool }).AdoptHeader(tc.adopt)
				_, _ = io.WriteString(w, "body")
			})})
			resp, err := ts.client().Get(ts.url("/"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ok := <-okc; ok != tc.wantOK {
				t.Fatalf("AdoptHeader = %v, want %v", ok, tc.wantOK)
			}
			if string(b) != "body" || resp.Header.Get("Content-Length") != "4" {
				t.Fatalf("body %q, content-length %q", b, resp.Header.Get("Content-Length"))
			}
			for k, v := range tc.want {
				if got := resp.Header.Get(k); got != v {
					t.Fatalf("%s = %q, want %q (header %v)", k, got, v, resp.Header)
				}
			}
		})
	}
}

// TestFramesAfterCutShort: a stream the server closed before the client
// ended it (the handler answered without reading the whole request) may
// still receive what the client sent before it saw the RST_STREAM: those
// frames are ignored (RFC 9113 §5.1), the connection lives on. Frames after
// the client's own RST_STREAM are a stream error. Only the most recent
// such streams are remembered: an old one is a connection error again, as
// is any frame on a stream that ended normally (TestConnectionErrors).
func TestFramesAfterCutShort(t *testing.T) {
	// quiet checks, a PING round trip later, that the server sent nothing
	// on stream id and did not end the connection.
	quiet := func(rc *rawConn, id uint32) {
		t.Helper()
		p := [8]byte{'c', 'u', 't', byte(id)}
		rc.check(rc.fr.WritePing(false, p))
		rc.await("PING ACK", func(f http2.Frame) bool {
			switch ff := f.(type) {
			case *http2.GoAwayFrame:
				t.Fatalf("GOAWAY %v", ff.ErrCode)
			case *http2.MetaHeadersFrame, *http2.DataFrame, *http2.RSTStreamFrame:
				if f.Header().StreamID == id {
					t.Fatalf("frame %v on stream %d, want none", f, id)
				}
			}
			pf, ok := f.(*http2.PingFrame)
			return ok && pf.IsAck() && pf.Data == p
		})
	}
	// cutShort opens stream id with a body the handler never reads.
	cutShort := func(rc *rawConn, id uint32) {
		t.Helper()
		rc.request(id, "POST", "/hello", false)
		if r := rc.readResponse(id); r.status != "200" {
			t.Fatalf("stream %d: status %s", id, r.status)
		}
		rc.expectReset(id, http2.ErrCodeNo)
	}
	stillServes := func(rc *rawConn, id uint32) {
		t.Helper()
		rc.request(id, "GET", "/hello", true)
		if r := rc.readResponse(id); r.status != "200" || string(r.body) != "hello" {
			t.Fatalf("stream %d after the ignored frames: %s %q", id, r.status, r.body)
		}
	}

	t.Run("body and trailers in flight: ignored", func(t *testing.T) {
		rc := newRaw(t, newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)}))
		cutShort(rc, 1)
		rc.data(1, false, []byte("late body"))
		rc.headers(1, true, "x-checksum", "abc")
		quiet(rc, 1)
		stillServes(rc, 3)
	})
	t.Run("HEADERS after the client's RST_STREAM: stream error", func(t *testing.T) {
		rc := newRaw(t, newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)}))
		rc.request(1, "POST", "/echo", false)
		rc.check(rc.fr.WriteRSTStream(1, http2.ErrCodeCancel))
		rc.headers(1, true, "x-checksum", "abc")
		rc.expectReset(1, http2.ErrCodeStreamClosed)
		stillServes(rc, 3)
	})
	t.Run("forgotten after 64 more: connection error", func(t *testing.T) {
		ts := newTestServer(t, Config{Handler: http.HandlerFunc(echoHandler)})
		rc := newRaw(t, ts)
		for i := range uint32(cutShortKept + 1) {
			cutShort(rc, 2*i+1)
		}
		rc.headers(1, true, "x-checksum", "abc")
		rc.expectGoAway(http2.ErrCodeStreamClosed, true)
		ts.waitServed()
	})
}

// TestExpectContinue: 100 Continue is sent when the handler first reads a
// body the client holds back, and never once the final response headers
// have left (a 1xx after them would be malformed), nor when the handler
// never reads.
func TestExpectContinue(t *testing.T) {
	ts := newTestServer(t, Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/read-first":
			_, _ = io.Copy(w, r.Body)
		case "/flush-first":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			_, _ = io.Copy(w, r.Body)
		case "/ignore":
			_, _ = io.WriteString(w, "no")
		}
	})})
	for i, tc := range []struct {
		path         string
		wantContinue bool
		wantBody     string
	}{
		{"/read-first", true, "ping"},
		{"/flush-first", false, "ping"},
		{"/ignore", false, "no"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rc := newRaw(t, ts)
			id := uint32(2*i + 1)
			rc.request(id, "POST", tc.path, false, "expect", "100-continue")
			first := rc.await("HEADERS", func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				return ok && h.StreamID == id
			}).(*http2.MetaHeadersFrame)
			if got := first.PseudoValue("status") == "100"; got != tc.wantContinue {
				t.Fatalf("first HEADERS :status %s, want 100 Continue: %v", first.PseudoValue("status"), tc.wantContinue)
			}
			if tc.path != "/ignore" {
				rc.data(id, true, []byte("ping"))
			}
			var body []byte
			rc.await("END_STREAM", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					if f.StreamID == id && f.PseudoValue("status") == "100" {
						t.Fatal("100 Continue after the final response headers")
					}
					return f.StreamID == id && f.StreamEnded()
				case *http2.DataFrame:
					if f.StreamID == id {
						body = append(body, f.Data()...)
						return f.StreamEnded()
					}
				}
				return false
			})
			if string(body) != tc.wantBody {
				t.Fatalf("body %q, want %q", body, tc.wantBody)
			}
		})
	}
}

// TestValidScheme: RFC 3986 scheme syntax for :scheme.

func TestValidScheme(t *testing.T) {
	for s, want := range map[string]bool{
		"http": true, "https": true, "HTTPS": true, "svn+ssh": true, "a.b-c": true, "h2": true,
		"": false, "1http": false, "+x": false, "http:": false, "http://x": false, "ht tp": false,
		"ht\x00tp": false, "é": false, "http\r\n": false,
	} {
		if got := validScheme(s); got != want {
			t.Errorf("validScheme(%q) = %v, want %v", s, got, want)
		}
	}
}
