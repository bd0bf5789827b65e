package h2client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// withCheck answers /check with "GET /check" and passes the rest to h.
func withCheck(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/check" {
			_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
			return
		}
		h(w, r)
	})
}

func TestGet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Path", r.URL.RequestURI())
			w.Header().Set("X-Host", r.Host)
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			_, _ = io.WriteString(w, "hello "+r.Header.Get("X-Req"))
		}))
		c := b.dial(t, Config{})
		if !c.Reserve() {
			t.Fatal("Reserve on a new connection: false")
		}
		req := newReq(t, context.Background(), "GET", "/a/b?q=1", nil)
		req.Header.Set("X-Req", "there")
		resp, body := do(t, c, req)
		if resp.StatusCode != 200 || string(body) != "hello there" || resp.ProtoMajor != 2 {
			t.Fatalf("got %d %q %s", resp.StatusCode, body, resp.Proto)
		}
		if got := resp.Header.Get("X-Path"); got != "/a/b?q=1" {
			t.Errorf("server saw path %q", got)
		}
		if got := resp.Header.Get("X-Host"); got != "127.0.0.1" {
			t.Errorf("server saw host %q", got)
		}
		if got := resp.Header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("X-Multi = %q", got)
		}
		if resp.Request != req {
			t.Error("resp.Request is not the request")
		}
		// A HEAD and a 204 have no body.
		resp, body = do(t, c, newReq(t, context.Background(), "HEAD", "/x", nil))
		if resp.StatusCode != 200 || len(body) != 0 {
			t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
		}
		for range 3 {
			checkGet(t, c)
		}
		if st := c.State(); st.Closed || st.Closing {
			t.Fatalf("State = %+v after GETs", st)
		}
		waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
	})
}

// seeded is a deterministic pseudo-random stream.
func seeded(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), n)
}

func TestLargeEcho(t *testing.T) {
	const size = 20 << 20
	h := sha256.New()
	_, _ = io.Copy(h, seeded(size))
	want := h.Sum(nil)
	for _, tc := range []struct {
		name   string
		length int64 // request ContentLength; -1 unknown
	}{
		{"known length", size},
		{"unknown length", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
				b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(w, r.Body)
				}))
				// Small receive windows: the echo is many times both.
				c := b.dial(t, Config{StreamWindow: 1 << 16, ConnWindow: 1 << 17})
				req := newReq(t, context.Background(), "POST", "/echo", io.NopCloser(seeded(size)))
				req.ContentLength = tc.length
				resp, err := c.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				n, err := io.Copy(h, resp.Body)
				_ = resp.Body.Close()
				if err != nil {
					t.Fatalf("after %d bytes: %v", n, err)
				}
				if n != size || !bytes.Equal(h.Sum(nil), want) {
					t.Fatalf("echoed %d bytes, hash mismatch: %v", n, !bytes.Equal(h.Sum(nil), want))
				}
				checkGet(t, c)
			})
		})
	}
}

func TestResponseTrailers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum, X-Other")
			_, _ = io.WriteString(w, strings.Repeat("x", 100000))
			w.Header().Set("X-Sum", "42")
			w.Header().Set("X-Other", "o")
		}))
		c := b.dial(t, Config{})
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/t", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, ok := resp.Trailer["X-Sum"]; !ok {
			t.Errorf("declared trailers not in resp.Trailer before the body: %v", resp.Trailer)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != 100000 {
			t.Fatalf("body: %d, %v", n, err)
		}
		if resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Other") != "o" {
			t.Fatalf("trailers after EOF: %v", resp.Trailer)
		}
	})
}

func TestRequestTrailers(t *testing.T) {
	for _, tc := range []struct {
		name string
		body func() io.ReadCloser
	}{
		{"with body", func() io.ReadCloser { return io.NopCloser(strings.NewReader(strings.Repeat("b", 70000))) }},
		{"empty body", func() io.ReadCloser { return http.NoBody }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
				b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
					n, _ := io.Copy(io.Discard, r.Body)
					_, _ = fmt.Fprintf(w, "%d %s %s", n, r.Trailer.Get("X-Req-Sum"), r.Trailer.Get("X-Req-Two"))
				}))
				c := b.dial(t, Config{})
				req := newReq(t, context.Background(), "POST", "/rt", nil)
				req.Body = tc.body()
				req.ContentLength = -1
				req.Trailer = http.Header{"X-Req-Sum": {"s1"}, "X-Req-Two": {"2"}}
				_, body := do(t, c, req)
				n := "70000"
				if tc.name == "empty body" {
					n = "0"
				}
				if want := n + " s1 2"; string(body) != want {
					t.Fatalf("server saw %q, want %q", body, want)
				}
				checkGet(t, c)
			})
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	const n = 200
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		var arrived atomic.Int32
		all := newSignal()
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			if arrived.Add(1) == n {
				all.fire()
			}
			// Every request is open at once: none is answered before
			// all arrived.
			select {
			case <-all.ch:
			case <-r.Context().Done():
				return
			}
			body, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprintf(w, "%s:%s", r.URL.Path, body)
		}))
		c := b.dial(t, Config{})
		checkGet(t, c) // the server's SETTINGS (its stream limit) are in
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var body io.Reader
				if i%2 == 1 {
					body = strings.NewReader(strings.Repeat("y", i))
				}
				req := newReq(t, context.Background(), "POST", fmt.Sprintf("/r%d", i), body)
				resp, err := c.RoundTrip(req)
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				want := fmt.Sprintf("/r%d:%s", i, strings.Repeat("y", i%2*i))
				if err != nil || string(b) != want {
					errs <- fmt.Errorf("request %d: %q, %v; want %q", i, b, err, want)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
		checkGet(t, c)
	})
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name        string
		headersSent bool // the handler answers before waiting
	}{
		{"waiting for headers", false},
		{"reading the body", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
				entered, canceled := newSignal(), newSignal()
				b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
					if tc.headersSent {
						_, _ = io.WriteString(w, "part")
						w.(http.Flusher).Flush()
					}
					entered.fire()
					<-r.Context().Done()
					canceled.fire()
				}))
				c := b.dial(t, Config{})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req := newReq(t, ctx, "GET", "/wait", nil)
				if !tc.headersSent {
					errc := make(chan error, 1)
					go func() {
						resp, err := c.RoundTrip(req)
						if err == nil {
							_ = resp.Body.Close()
							err = errors.New("a response")
						}
						errc <- err
					}()
					waitFor(t, entered.ch, "the handler")
					cancel()
					select {
					case err := <-errc:
						if !errors.Is(err, context.Canceled) {
							t.Fatalf("RoundTrip = %v, want context.Canceled", err)
						}
					case <-deadline():
						t.Fatal("RoundTrip did not return after cancel")
					}
				} else {
					resp, err := c.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					buf := make([]byte, 4)
					if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "part" {
						t.Fatalf("first bytes %q, %v", buf, err)
					}
					waitFor(t, entered.ch, "the handler")
					errc := make(chan error, 1)
					go func() {
						_, err := resp.Body.Read(buf)
						errc <- err
					}()
					cancel()
					select {
					case err := <-errc:
						if !errors.Is(err, context.Canceled) {
							t.Fatalf("Read = %v, want context.Canceled", err)
						}
					case <-deadline():
						t.Fatal("Read did not return after cancel")
					}
				}
				waitFor(t, canceled.ch, "the server to see the request canceled")
				waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
				checkGet(t, c)
			})
		})
	}
}

func TestBodyCloseResets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		gone := newSignal()
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 32<<10)
			for range 2000 { // 64 MiB, far more than the windows
				if _, err := w.Write(chunk); err != nil {
					break
				}
				w.(http.Flusher).Flush()
				if r.Context().Err() != nil {
					break
				}
			}
			select {
			case <-r.Context().Done():
				gone.fire()
			case <-deadline():
			}
		}))
		c := b.dial(t, Config{StreamWindow: 1 << 16})
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/big", nil))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		if err := resp.Body.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Body.Read(buf); err == nil {
			t.Error("Read after Close: no error")
		}
		waitFor(t, gone.ch, "the server to see the stream reset")
		waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
		for range 3 {
			checkGet(t, c)
		}
	})
}

// failingBody returns n bytes, then an error.
type failingBody struct{ n int }

var errBodyBroke = errors.New("the body broke")

func (b *failingBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, errBodyBroke
	}
	k := min(len(p), b.n)
	clear(p[:k])
	b.n -= k
	return k, nil
}

func (b *failingBody) Close() error { return nil }

// TestRequestBodyError: a request body that fails resets the stream; the
// server sees the request fail and the connection stays usable.
func TestRequestBodyError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		failed := newSignal()
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				failed.fire()
			}
		}))
		c := b.dial(t, Config{})
		req := newReq(t, context.Background(), "POST", "/up", nil)
		req.Body = &failingBody{n: 100000}
		req.ContentLength = -1
		resp, err := c.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
		if !errors.Is(err, errBodyBroke) {
			t.Fatalf("request with a failing body: %v, want errBodyBroke", err)
		}
		waitFor(t, failed.ch, "the server to see the request body fail")
		waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
		checkGet(t, c)
	})
}

// endless is a request body that never ends by itself.
type endless struct{ closed atomic.Bool }

func (e *endless) Read(p []byte) (int, error) {
	if e.closed.Load() {
		return 0, errors.New("read after close")
	}
	clear(p)
	return len(p), nil
}

func (e *endless) Close() error { e.closed.Store(true); return nil }

// TestResponseBeforeRequestBody: a server that answers without reading the
// request body (and resets it) completes the response; the client stops
// sending and closes the body.
func TestResponseBeforeRequestBody(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "early")
		}))
		c := b.dial(t, Config{})
		body := &endless{}
		req := newReq(t, context.Background(), "POST", "/early", nil)
		req.Body = body
		req.ContentLength = -1
		resp, got := do(t, c, req)
		if resp.StatusCode != 200 || string(got) != "early" {
			t.Fatalf("%d %q", resp.StatusCode, got)
		}
		waitUntil(t, "the request body to be closed", body.closed.Load)
		waitUntil(t, "no open stream", func() bool { return c.State().Streams == 0 })
		checkGet(t, c)
	})
}
