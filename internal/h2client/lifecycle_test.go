package h2client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// blocker's handler answers /block only once release fires, after a first
// "part" when early is set.
type blocker struct {
	entered, release *signal
	early            bool
}

func newBlocker(early bool) *blocker {
	return &blocker{entered: newSignal(), release: newSignal(), early: early}
}

func (bl *blocker) handler() http.Handler {
	return withCheck(func(w http.ResponseWriter, r *http.Request) {
		if bl.early {
			_, _ = io.WriteString(w, "part")
			w.(http.Flusher).Flush()
		}
		bl.entered.fire()
		select {
		case <-bl.release.ch:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "done")
	})
}

// result is how a request ended: its body or its error.
type result struct {
	body string
	err  error
}

// inflight starts a GET of /block and returns where its result arrives.
func inflight(t *testing.T, c *Conn) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	req := newReq(t, context.Background(), "GET", "/block", nil)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		ch <- result{string(b), err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-deadline():
		t.Fatal("the request did not end")
		return result{}
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		bl := newBlocker(false)
		b := start(t, bl.handler())
		c := b.dial(t, Config{})
		checkGet(t, c)
		res := inflight(t, c)
		waitFor(t, bl.entered.ch, "the handler")

		shutdownErr := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			shutdownErr <- b.shutdown(ctx)
		}()
		waitUntil(t, "the GOAWAY", func() bool { st := c.State(); return st.Closing || st.Closed })
		if c.Reserve() {
			t.Error("Reserve after GOAWAY: true")
		}
		_, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/check", nil))
		if !errors.Is(err, ErrNotSent) {
			t.Errorf("RoundTrip after GOAWAY = %v, want ErrNotSent", err)
		}
		bl.release.fire()
		if r := recv(t, res); r.err != nil || r.body != "done" {
			t.Fatalf("in-flight request: %q, %v", r.body, r.err)
		}
		select {
		case err := <-shutdownErr:
			if err != nil {
				t.Errorf("server Shutdown: %v", err)
			}
		case <-deadline():
			t.Fatal("server Shutdown did not return")
		}
		waitUntil(t, "the connection to close", func() bool { return c.State().Closed })
		if c.Reserve() {
			t.Error("Reserve on a closed connection: true")
		}
		_, err = c.RoundTrip(newReq(t, context.Background(), "GET", "/check", nil))
		if !errors.Is(err, ErrNotSent) {
			t.Errorf("RoundTrip after close = %v, want ErrNotSent", err)
		}
	})
}

func TestClientShutdown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		bl := newBlocker(false)
		b := start(t, bl.handler())
		c := b.dial(t, Config{})
		res := inflight(t, c)
		waitFor(t, bl.entered.ch, "the handler")
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			done <- c.Shutdown(ctx)
		}()
		waitUntil(t, "Closing", func() bool { return c.State().Closing })
		if c.Reserve() {
			t.Error("Reserve while shutting down: true")
		}
		if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/check", nil)); !errors.Is(err, ErrNotSent) {
			t.Errorf("RoundTrip while shutting down = %v, want ErrNotSent", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		default:
		}
		bl.release.fire()
		if r := recv(t, res); r.err != nil || r.body != "done" {
			t.Fatalf("in-flight request: %q, %v", r.body, r.err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
		case <-deadline():
			t.Fatal("Shutdown did not return")
		}
		if !c.State().Closed {
			t.Errorf("State after Shutdown = %+v", c.State())
		}
	})
}

func TestClientShutdownContext(t *testing.T) {
	bl := newBlocker(false)
	b := startH2Server(t, bl.handler())
	c := b.dial(t, Config{})
	res := inflight(t, c)
	waitFor(t, bl.entered.ch, "the handler")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a done context = %v", err)
	}
	if c.State().Closed {
		t.Fatal("Shutdown with a done context closed the connection")
	}
	_ = c.Close()
	if r := recv(t, res); r.err == nil {
		t.Fatal("in-flight request succeeded after Close")
	}
}

func TestCloseFailsInflight(t *testing.T) {
	for _, early := range []bool{false, true} {
		name := "waiting for headers"
		if early {
			name = "reading the body"
		}
		t.Run(name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
				bl := newBlocker(early)
				defer bl.release.fire()
				b := start(t, bl.handler())
				c := b.dial(t, Config{})
				res := inflight(t, c)
				waitFor(t, bl.entered.ch, "the handler")
				if early {
					waitUntil(t, "the response headers", func() bool {
						c.mu.Lock()
						defer c.mu.Unlock()
						for _, st := range c.streams {
							return st.resp != nil
						}
						return false
					})
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				r := recv(t, res)
				if r.err == nil {
					t.Fatalf("in-flight request succeeded after Close: %q", r.body)
				}
				if !c.State().Closed {
					t.Error("State().Closed false after Close")
				}
				if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/check", nil)); !errors.Is(err, ErrNotSent) {
					t.Errorf("RoundTrip after Close = %v, want ErrNotSent", err)
				}
			})
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		b := start(t, withCheck(func(w http.ResponseWriter, r *http.Request) {}))
		c := b.dial(t, Config{IdleTimeout: 20 * time.Millisecond})
		checkGet(t, c)
		waitUntil(t, "the idle connection to close", func() bool { return c.State().Closed })
		if c.Reserve() {
			t.Error("Reserve on the closed connection: true")
		}
	})
}

// TestIdleTimeoutNotWhileBusy: a stream open for many idle timeouts keeps
// the connection.
func TestIdleTimeoutNotWhileBusy(t *testing.T) {
	bl := newBlocker(false)
	b := startH2Server(t, bl.handler())
	c := b.dial(t, Config{IdleTimeout: time.Millisecond})
	res := inflight(t, c)
	waitFor(t, bl.entered.ch, "the handler")
	bl.release.fire()
	if r := recv(t, res); r.err != nil || r.body != "done" {
		t.Fatalf("request on a connection with a tiny idle timeout: %q, %v", r.body, r.err)
	}
}

func TestSetDoNotReuse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, start func(*testing.T, http.Handler) *backend) {
		bl := newBlocker(false)
		b := start(t, bl.handler())

		// Idle: closed at once.
		c := b.dial(t, Config{})
		checkGet(t, c)
		c.SetDoNotReuse()
		waitUntil(t, "the idle connection to close", func() bool { return c.State().Closed })

		// Busy: closing; the open stream finishes, then it closes.
		c = b.dial(t, Config{})
		res := inflight(t, c)
		waitFor(t, bl.entered.ch, "the handler")
		c.SetDoNotReuse()
		if st := c.State(); !st.Closing || st.Closed || st.Streams != 1 {
			t.Errorf("State after SetDoNotReuse = %+v", st)
		}
		if c.Reserve() {
			t.Error("Reserve after SetDoNotReuse: true")
		}
		if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "/check", nil)); !errors.Is(err, ErrNotSent) {
			t.Errorf("RoundTrip after SetDoNotReuse = %v, want ErrNotSent", err)
		}
		bl.release.fire()
		if r := recv(t, res); r.err != nil || r.body != "done" {
			t.Fatalf("in-flight request: %q, %v", r.body, r.err)
		}
		waitUntil(t, "the connection to close", func() bool { return c.State().Closed })
	})
}

func TestReserve(t *testing.T) {
	b := startH2Server(t, withCheck(func(w http.ResponseWriter, r *http.Request) {}))
	c := b.dial(t, Config{})
	checkGet(t, c) // SETTINGS: 256 streams
	n := 0
	for c.Reserve() && n < 1000 {
		n++
	}
	if n != 256 {
		t.Fatalf("%d reservations, want the server's 256", n)
	}
	// A reserved slot is used by RoundTrip.
	checkGet(t, c)
	if !c.Reserve() {
		t.Fatal("no slot after a reserved request finished")
	}
}
