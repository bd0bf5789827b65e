package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h1App is a real net/http server on loopback that counts the connections
// it accepted and can close the idle ones.
type h1App struct {
	addr     string
	accepted atomic.Int64
	mu       sync.Mutex
	idle     map[net.Conn]bool
}

func startH1App(t testing.TB, h http.Handler) *h1App {
	t.Helper()
	a := &h1App{idle: map[net.Conn]bool{}}
	ln := listen(t)
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			a.accepted.Add(1)
		}
		a.mu.Lock()
		if s == http.StateIdle {
			a.idle[c] = true
		} else {
			delete(a.idle, c)
		}
		a.mu.Unlock()
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	a.addr = ln.Addr().String()
	return a
}

// closeIdle closes the app's side of every idle keep-alive connection once
// at least one is idle (as an app with a short keep-alive timeout would).
func (a *h1App) closeIdle(t *testing.T) {
	t.Helper()
	eventually(t, "an idle app connection", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.idle) > 0
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range a.idle {
		_ = c.Close()
	}
}

func newTestH1Client(t testing.TB, addr string) *h1Client {
	cl := newH1Client(addr, DefaultMaxHeaderBytes, newStartClock(nil))
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

func newReq(t testing.TB, method, addr, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header["User-Agent"] = emptyUA
	return req
}

// roundTrip runs req and returns the response with its body read and closed.
func roundTrip(t testing.TB, rt http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// echo answers with the method, the request body and the X-Sum trailer.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %q te=%v", r.Method, b, r.Trailer.Get("X-Sum"), r.TransferEncoding)
})

// opaque hides the concrete reader type from net/http, as a streamed
// request body from the inbound server would.
type opaque struct{ io.Reader }

func TestH1ClientKeepAlive(t *testing.T) {
	app := startH1App(t, echo)
	cl := newTestH1Client(t, app.addr)
	for i := range 30 {
		var req *http.Request
		want := "GET  \"\" te=[]"
		switch i % 3 {
		case 1:
			req = newReq(t, http.MethodPost, app.addr, "/", strings.NewReader("hello"))
			want = "POST hello \"\" te=[]"
		case 2:
			req = newReq(t, http.MethodPut, app.addr, "/", nil)
			req.Body, req.ContentLength = io.NopCloser(opaque{strings.NewReader("streamed")}), -1
			want = "PUT streamed \"\" te=[chunked]"
		default:
			req = newReq(t, http.MethodGet, app.addr, "/", nil)
		}
		if _, body := roundTrip(t, cl, req); body != want {
			t.Fatalf("request %d: body %q, want %q", i, body, want)
		}
	}
	if n := app.accepted.Load(); n != 1 {
		t.Fatalf("app accepted %d connections, want 1", n)
	}
}

func TestH1ClientConcurrent(t *testing.T) {
	app := startH1App(t, echo)
	cl := newTestH1Client(t, app.addr)
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Sprintf("w%d-%d", w, i)
				req := newReq(t, http.MethodPost, app.addr, "/", strings.NewReader(msg))
				resp, err := cl.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := "POST " + msg + ` "" te=[]`; err != nil || string(b) != want {
					errs <- fmt.Errorf("body %q (%v), want %q", b, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// At most one connection per worker: every one went back to the pool.
	if n := app.accepted.Load(); n > workers {
		t.Fatalf("app accepted %d connections for %d workers", n, workers)
	}
}

func TestH1ClientTrailers(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			echo(w, r)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"X-Late", "unannounced")
	}))
	cl := newTestH1Client(t, app.addr)

	t.Run("response", func(t *testing.T) {
		resp, body := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil))
		if body != "part1,part2" || resp.ContentLength != -1 {
			t.Fatalf("body %q, length %d", body, resp.ContentLength)
		}
		if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
			t.Errorf("Grpc-Status trailer %q, want 0 (trailer %v)", got, resp.Trailer)
		}
		if got := resp.Trailer.Get("X-Late"); got != "unannounced" {
			t.Errorf("X-Late trailer %q (trailer %v)", got, resp.Trailer)
		}
	})
	t.Run("request", func(t *testing.T) {
		req := newReq(t, http.MethodPost, app.addr, "/echo", nil)
		req.Body, req.ContentLength = io.NopCloser(opaque{strings.NewReader("payload")}), -1
		req.Trailer = http.Header{"X-Sum": {"42"}}
		if _, body := roundTrip(t, cl, req); body != `POST payload "42" te=[chunked]` {
			t.Fatalf("app saw %q", body)
		}
	})
}

// pattern is a deterministic 8 MiB-able byte stream.
type pattern struct{ n, left int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.left)]
	for i := range b {
		b[i] = byte((p.n + int64(i)) * 7)
	}
	p.n += int64(len(b))
	p.left -= int64(len(b))
	return len(b), nil
}

func sum(r io.Reader) (string, int64) {
	h := sha256.New()
	n, _ := io.Copy(h, r)
	return fmt.Sprintf("%x", h.Sum(nil)), n
}

func TestH1ClientLargeBodies(t *testing.T) {
	const size = 8 << 20
	want, _ := sum(&pattern{left: size})
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			w.Header().Set("Content-Length", fmt.Sprint(size))
			_, _ = io.Copy(w, &pattern{left: size})
		case "/echo": // streams the body back while it arrives
			_ = http.NewResponseController(w).EnableFullDuplex()
			w.WriteHeader(http.StatusOK)
			_, _ = io.Copy(w, r.Body)
		}
	}))
	cl := newTestH1Client(t, app.addr)
	for _, tc := range []struct {
		name   string
		path   string
		length int64 // request body length; -1 chunked; 0 none
	}{
		{name: "download", path: "/download"},
		{name: "echo content-length", path: "/echo", length: size},
		{name: "echo chunked", path: "/echo", length: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newReq(t, http.MethodPost, app.addr, tc.path, nil)
			if tc.length != 0 {
				req.Body, req.ContentLength = io.NopCloser(&pattern{left: size}), tc.length
			}
			resp, err := cl.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, n := sum(resp.Body)
			resp.Body.Close()
			if n != size || got != want {
				t.Fatalf("got %d bytes (sha256 %s), want %d (%s)", n, got, size, want)
			}
		})
	}
	if n := app.accepted.Load(); n != 1 {
		t.Fatalf("app accepted %d connections, want 1", n)
	}
}

func TestH1ClientAnswerBeforeBody(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	cl := newTestH1Client(t, app.addr)
	// 8 MiB that the app never reads: the request can only complete if
	// the response is read while the body is still being written.
	req := newReq(t, http.MethodPost, app.addr, "/", nil)
	req.Body, req.ContentLength = io.NopCloser(&pattern{left: 8 << 20}), 8<<20
	resp, body := roundTrip(t, cl, req)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || body != "too large\n" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	// The connection could not be reused; the next request dials again.
	if _, body := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil)); body != "too large\n" {
		t.Fatalf("second request: %q", body)
	}
}

func TestH1ClientAppClosedIdleConn(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  func(addr string) *http.Request
	}{
		{name: "GET", req: func(addr string) *http.Request { return newReq(t, http.MethodGet, addr, "/", nil) }},
		{name: "POST", req: func(addr string) *http.Request {
			r := newReq(t, http.MethodPost, addr, "/", nil)
			r.Body, r.ContentLength = io.NopCloser(opaque{strings.NewReader("x")}), 1
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startH1App(t, echo)
			cl := newTestH1Client(t, app.addr)
			roundTrip(t, cl, tc.req(app.addr))
			app.closeIdle(t)
			if _, body := roundTrip(t, cl, tc.req(app.addr)); !strings.HasPrefix(body, tc.name) {
				t.Fatalf("after the app closed the idle connection: %q", body)
			}
			if n := app.accepted.Load(); n != 2 {
				t.Fatalf("app accepted %d connections, want 2", n)
			}
		})
	}
	t.Run("Connection: close", func(t *testing.T) {
		app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}))
		cl := newTestH1Client(t, app.addr)
		for range 3 {
			if _, body := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil)); body != "bye" {
				t.Fatalf("body %q", body)
			}
		}
		if n := app.accepted.Load(); n != 3 {
			t.Fatalf("app accepted %d connections, want 3", n)
		}
	})
}

func TestH1ClientDeadline(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow-body" {
			_, _ = io.WriteString(w, "head")
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done() // until the client gives up
	}))
	cl := newTestH1Client(t, app.addr)
	for _, path := range []string{"/slow-headers", "/slow-body"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req := newReq(t, http.MethodGet, app.addr, path, nil).WithContext(ctx)
			resp, err := cl.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want one that is context.DeadlineExceeded", err)
			}
		})
	}
	t.Run("canceled before sending", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := cl.RoundTrip(newReq(t, http.MethodGet, app.addr, "/", nil).WithContext(ctx))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
}

func TestH1ClientHeaderLimit(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("X-Big", strings.Repeat("b", 2*DefaultMaxHeaderBytes))
		}
		_, _ = io.WriteString(w, "ok")
	}))
	cl := newTestH1Client(t, app.addr)
	_, err := cl.RoundTrip(newReq(t, http.MethodGet, app.addr, "/big", nil))
	if !errors.Is(err, errResponseHeaderTooLarge) {
		t.Fatalf("error %v, want errResponseHeaderTooLarge", err)
	}
	if _, body := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil)); body != "ok" {
		t.Fatalf("next request: %q", body)
	}
}

func TestH1ClientInformational(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusEarlyHints)
		}
		echo(w, r) // reading the body sends 100 Continue when it was expected
	}))
	cl := newTestH1Client(t, app.addr)
	t.Run("103", func(t *testing.T) {
		resp, body := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/hints", nil))
		if resp.StatusCode != http.StatusOK || body != `GET  "" te=[]` {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})
	t.Run("100-continue", func(t *testing.T) {
		req := newReq(t, http.MethodPost, app.addr, "/", nil)
		req.Body, req.ContentLength = io.NopCloser(opaque{strings.NewReader("data")}), 4
		req.Header.Set("Expect", "100-continue")
		resp, body := roundTrip(t, cl, req)
		if resp.StatusCode != http.StatusOK || body != `POST data "" te=[]` {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})
	if n := app.accepted.Load(); n != 1 {
		t.Fatalf("app accepted %d connections, want 1", n)
	}
}

func TestH1ClientNoBodyResponses(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	cl := newTestH1Client(t, app.addr)
	for _, tc := range []struct {
		method, path string
		status       int
		length       int64
	}{
		{http.MethodHead, "/", http.StatusOK, 5},
		{http.MethodGet, "/204", http.StatusNoContent, 0},
		{http.MethodGet, "/304", http.StatusNotModified, 0},
		{http.MethodGet, "/", http.StatusOK, 5}, // the connection is still in sync
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			resp, body := roundTrip(t, cl, newReq(t, tc.method, app.addr, tc.path, nil))
			wantBody := ""
			if tc.method == http.MethodGet && tc.length > 0 {
				wantBody = "hello"
			}
			if resp.StatusCode != tc.status || resp.ContentLength != tc.length || body != wantBody {
				t.Fatalf("status %d length %d body %q", resp.StatusCode, resp.ContentLength, body)
			}
		})
	}
	if n := app.accepted.Load(); n != 1 {
		t.Fatalf("app accepted %d connections, want 1", n)
	}
}

func TestH1ClientRequestHead(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua, hasUA := r.Header["User-Agent"]
		_, hasAE := r.Header["Accept-Encoding"]
		fmt.Fprintf(w, "%s|%s|%v%q|%v", r.Host, r.RequestURI, hasUA, ua, hasAE)
	}))
	cl := newTestH1Client(t, app.addr)
	for _, tc := range []struct {
		name string
		host string
		ua   []string // nil: no User-Agent key
		url  url.URL
		want string
	}{
		{name: "empty UA sends none", host: "users", ua: []string{""},
			url: url.URL{Path: "/a"}, want: `users|/a|false[]|false`},
		{name: "UA as given", host: "users.mesh:80", ua: []string{"curl/8.5"},
			url: url.URL{Path: "/a", RawQuery: "x=1"}, want: `users.mesh:80|/a?x=1|true["curl/8.5"]|false`},
		{name: "no UA key gets Go's default", host: "users", url: url.URL{Path: "/"},
			want: `users|/|true["Go-http-client/1.1"]|false`},
		{name: "Host from URL", url: url.URL{Path: "/"}, ua: []string{""},
			want: app.addr + `|/|false[]|false`},
		{name: "RawPath kept", host: "users", ua: []string{""},
			url: url.URL{Path: "/a b/c/d", RawPath: "/a%20b/c%2Fd"}, want: `users|/a%20b/c%2Fd|false[]|false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			u.Scheme, u.Host = "http", app.addr
			req := newReq(t, http.MethodGet, app.addr, "/", nil)
			req.URL, req.Host = &u, tc.host
			delete(req.Header, "User-Agent")
			if tc.ua != nil {
				req.Header["User-Agent"] = tc.ua
			}
			if _, body := roundTrip(t, cl, req); body != tc.want {
				t.Fatalf("app saw %s, want %s", body, tc.want)
			}
		})
	}
}

func TestH1ClientCloseBeforeEOF(t *testing.T) {
	app := startH1App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, &pattern{left: 1 << 20})
	}))
	cl := newTestH1Client(t, app.addr)
	resp, err := cl.RoundTrip(newReq(t, http.MethodGet, app.addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Close succeeded")
	}
	if _, n := sum(func() io.Reader {
		_, b := roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil))
		return strings.NewReader(b)
	}()); n != 1<<20 {
		t.Fatalf("second response %d bytes", n)
	}
	if n := app.accepted.Load(); n != 2 {
		t.Fatalf("app accepted %d connections, want 2 (the first one was not to be reused)", n)
	}
}

func TestH1ClientIdleTimeout(t *testing.T) {
	app := startH1App(t, echo)
	var now atomic.Int64
	cl := newH1Client(app.addr, DefaultMaxHeaderBytes, newStartClock(func() time.Time { return time.Unix(now.Load(), 0) }))
	t.Cleanup(cl.CloseIdleConnections)
	roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil))
	now.Add(int64(h1IdleTimeout/time.Second) + 1)
	roundTrip(t, cl, newReq(t, http.MethodGet, app.addr, "/", nil))
	if n := app.accepted.Load(); n != 2 {
		t.Fatalf("app accepted %d connections, want 2", n)
	}
	cl.CloseIdleConnections()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.idle) != 0 {
		t.Fatalf("%d idle connections after CloseIdleConnections", len(cl.idle))
	}
}

func TestInboundAppClient(t *testing.T) {
	for _, tc := range []struct {
		proto string
		want  string
	}{
		{AppHTTP1, "*proxy.h1Client"},
		{"", "*proxy.h1Client"},
		{AppH2C, "*http.Transport"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			m := newMesh(t, meshOpts{app: echo, inTweak: func(c *InboundConfig) { c.AppProtocol = tc.proto }})
			if got := fmt.Sprintf("%T", m.in.app); got != tc.want {
				t.Fatalf("app client %s, want %s", got, tc.want)
			}
		})
	}
}

// rawApp accepts connections on loopback and runs serve on each, for
// answers net/http's server would not give.
func rawApp(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln := listen(t)
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				serve(c, bufio.NewReader(c))
			})
		}
	})
	return ln.Addr().String(), accepted
}

func TestH1ClientNoRetryAfterResponseBytes(t *testing.T) {
	addr, accepted := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if i == 1 { // half a response, then the connection drops
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	cl := newTestH1Client(t, addr)
	roundTrip(t, cl, newReq(t, http.MethodGet, addr, "/", nil))
	_, err := cl.RoundTrip(newReq(t, http.MethodGet, addr, "/", nil))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want unexpected EOF", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("app accepted %d connections: the request was retried", n)
	}
}

func TestH1ClientSwitchingProtocols(t *testing.T) {
	addr, _ := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	cl := newTestH1Client(t, addr)
	req := newReq(t, http.MethodGet, addr, "/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rw, ok := resp.Body.(io.ReadWriter)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		t.Fatalf("status %d, body %T", resp.StatusCode, resp.Body)
	}
	if _, err := io.WriteString(rw, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(rw, got); err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// BenchmarkH1Client compares h1Client with the http.Transport it replaces
// (same settings as the inbound had), 64 concurrent GETs against one
// loopback app:
//
//	go test -run '^$' -bench BenchmarkH1Client -benchmem ./proxy
func BenchmarkH1Client(b *testing.B) {
	app := startH1App(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from users\n")
	}))
	tr := &http.Transport{
		MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true, MaxResponseHeaderBytes: DefaultMaxHeaderBytes,
		WriteBufferSize: 32 << 10, ReadBufferSize: 32 << 10, Protocols: new(http.Protocols),
	}
	tr.Protocols.SetHTTP1(true)
	b.Cleanup(tr.CloseIdleConnections)
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"transport", tr},
		{"h1client", newTestH1Client(b, app.addr)},
	} {
		for _, post := range []bool{false, true} {
			name := c.name + "-GET"
			if post {
				name = c.name + "-POST"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						var req *http.Request
						if post {
							req = newReq(b, http.MethodPost, app.addr, "/users/42", nil)
							req.Body, req.ContentLength = io.NopCloser(bytes.NewReader([]byte("payload"))), 7
						} else {
							req = newReq(b, http.MethodGet, app.addr, "/users/42", nil)
						}
						resp, err := c.rt.RoundTrip(req)
						if err != nil {
							b.Fatal(err)
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			})
		}
	}
}

// TestWriteBodiless: the allocation-free request head says what req.Write
// says (parsed back by net/http), and refuses a bad Host.
func TestWriteBodiless(t *testing.T) {
	mk := func(method, target, host string, h http.Header, closeConn bool) *http.Request {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Request{Method: method, URL: u, Host: host, Header: h, Close: closeConn}
	}
	tests := []struct {
		name string
		req  *http.Request
	}{
		{"plain GET", mk("GET", "http://app/users/1?x=1&y=%2F", "", http.Header{"Accept": {"*/*"}}, false)},
		{"host from Host field", mk("GET", "http://ignored/a", "users.mesh:8080", http.Header{}, false)},
		{"empty user agent means none", mk("HEAD", "http://app/", "", http.Header{"User-Agent": {""}}, false)},
		{"user agent trimmed", mk("GET", "http://app/", "", http.Header{"User-Agent": {"  curl/8  "}}, false)},
		{"POST without body", mk("POST", "http://app/p", "", http.Header{"X-A": {"1", "2"}}, false)},
		{"close", mk("DELETE", "http://app/d", "", http.Header{"X-Forwarded-Client-Cert": {"By=spiffe://td/svc/users"}}, true)},
		{"escaped path", mk("GET", "http://app/a%20b/%2e", "", http.Header{}, false)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parse := func(write func(*bufio.Writer) error) *http.Request {
				var buf bytes.Buffer
				bw := bufio.NewWriter(&buf)
				if err := write(bw); err != nil {
					t.Fatal(err)
				}
				bw.Flush()
				r, err := http.ReadRequest(bufio.NewReader(&buf))
				if err != nil {
					t.Fatalf("parse %q: %v", buf.String(), err)
				}
				return r
			}
			got := parse(func(bw *bufio.Writer) error { return writeBodiless(bw, tc.req) })
			want := parse(func(bw *bufio.Writer) error { return tc.req.Write(bw) })
			if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host ||
				got.ContentLength != want.ContentLength || got.Close != want.Close {
				t.Fatalf("got %s %s host %q len %d close %v, want %s %s host %q len %d close %v",
					got.Method, got.RequestURI, got.Host, got.ContentLength, got.Close,
					want.Method, want.RequestURI, want.Host, want.ContentLength, want.Close)
			}
			if fmt.Sprint(got.Header) != fmt.Sprint(want.Header) {
				t.Fatalf("header = %v, want %v", got.Header, want.Header)
			}
		})
	}
	bad := mk("GET", "http://app/", "a b", http.Header{}, false)
	if err := writeBodiless(bufio.NewWriter(io.Discard), bad); err == nil {
		t.Fatal("a Host with a space was written")
	}
}
