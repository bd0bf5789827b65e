package h2server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

// newTestCtx is a stream context under a base carrying one value, in a
// slot whose timer never fires during the test (expire is called by hand).
func newTestCtx(t *testing.T, slot *deadlineSlot) *streamCtx {
	t.Helper()
	c := new(streamCtx)
	c.init(context.WithValue(context.Background(), ctxKey{}, "v"), slot, time.Now())
	return c
}

func farSlot(t *testing.T) *deadlineSlot {
	s := newDeadlineSlot(time.Now().Add(time.Hour))
	t.Cleanup(s.stop)
	return s
}

// waitClosed fails the test if ch is not closed within a second.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatalf("%s: not done", what)
	}
}

func TestStreamCtx(t *testing.T) {
	for _, tc := range []struct {
		name    string
		slot    bool
		end     func(c *streamCtx, s *deadlineSlot) // how the context ends
		wantErr error
	}{
		{"stream ends", false, func(c *streamCtx, _ *deadlineSlot) { c.cancel(context.Canceled) }, context.Canceled},
		{"stream ends within its slot", true, func(c *streamCtx, _ *deadlineSlot) { c.cancel(context.Canceled) }, context.Canceled},
		{"slot's deadline", true, func(_ *streamCtx, s *deadlineSlot) { s.expire() }, context.DeadlineExceeded},
		{"ended, then the deadline", true, func(c *streamCtx, s *deadlineSlot) { c.cancel(context.Canceled); s.expire() }, context.Canceled},
		{"deadline, then ended", true, func(c *streamCtx, s *deadlineSlot) { s.expire(); c.cancel(context.Canceled) }, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var slot *deadlineSlot
			if tc.slot {
				slot = farSlot(t)
			}
			c := newTestCtx(t, slot)
			if _, ok := c.Deadline(); ok != tc.slot {
				t.Fatalf("Deadline set = %v, want %v", ok, tc.slot)
			}
			if c.Value(ctxKey{}) != "v" {
				t.Fatal("the base's value is not visible")
			}
			if c.Err() != nil {
				t.Fatalf("Err before the end = %v", c.Err())
			}
			early := c.Done()
			ran := make(chan struct{})
			c.AfterFunc(func() { close(ran) })
			stoppedRan := false
			stop := c.AfterFunc(func() { stoppedRan = true })
			if !stop() {
				t.Fatal("stop before the end = false, want true")
			}
			derived, cancelDerived := context.WithCancel(c)
			defer cancelDerived()
			viaStd := make(chan struct{})
			context.AfterFunc(c, func() { close(viaStd) })

			tc.end(c, slot)

			waitClosed(t, early, "Done taken before the end")
			waitClosed(t, c.Done(), "Done taken after the end")
			waitClosed(t, ran, "AfterFunc")
			waitClosed(t, viaStd, "context.AfterFunc")
			waitClosed(t, derived.Done(), "context.WithCancel child")
			if !errors.Is(c.Err(), tc.wantErr) || !errors.Is(derived.Err(), tc.wantErr) {
				t.Fatalf("Err = %v, child's %v; want %v", c.Err(), derived.Err(), tc.wantErr)
			}
			if stoppedRan {
				t.Fatal("a stopped AfterFunc ran")
			}
			late := make(chan struct{})
			if c.AfterFunc(func() { close(late) })() {
				t.Fatal("stop after the end = true, want false")
			}
			waitClosed(t, late, "AfterFunc registered after the end")
			if slot != nil && slot.head != nil {
				t.Fatal("an ended context is still in its slot")
			}
		})
	}
}

// TestDeadlineSlotJoinAfterExpiry: a stream that joins a slot whose
// deadline has passed is done at once.
func TestDeadlineSlotJoinAfterExpiry(t *testing.T) {
	s := farSlot(t)
	s.expire()
	c := newTestCtx(t, s)
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", c.Err())
	}
}

// TestDeadlineSlotTimer: the slot's own timer ends its members.
func TestDeadlineSlotTimer(t *testing.T) {
	s := newDeadlineSlot(time.Now().Add(10 * time.Millisecond))
	defer s.stop()
	c := newTestCtx(t, s)
	waitClosed(t, c.Done(), "member at the slot's deadline")
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", c.Err())
	}
}

// TestDeadlineSlotConcurrent: streams joining, ending and registering
// AfterFuncs while the slot expires (run with -race). Every context ends
// exactly once and every registered, unstopped AfterFunc runs.
func TestDeadlineSlotConcurrent(t *testing.T) {
	s := farSlot(t)
	const n = 200
	var wg sync.WaitGroup
	ctxs := make([]*streamCtx, n)
	ran := make([]chan struct{}, n)
	for i := range n {
		ctxs[i] = newTestCtx(t, s)
		ran[i] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctxs[i].AfterFunc(func() { close(ran[i]) })
			if i%2 == 0 {
				ctxs[i].cancel(context.Canceled)
			}
			_ = ctxs[i].Done()
		}()
	}
	s.expire()
	wg.Wait()
	for i := range n {
		waitClosed(t, ran[i], "AfterFunc")
		if ctxs[i].Err() == nil {
			t.Fatalf("context %d not done", i)
		}
	}
	if s.head != nil {
		t.Fatal("members left in an expired slot")
	}
}

// TestArrivedAt: a handler finds when its request's HEADERS were taken in
// (after the client sent them, before the handler ran); a derived context
// does not claim one.
func TestArrivedAt(t *testing.T) {
	type seen struct {
		at, handler   time.Time
		ok, derivedOK bool
	}
	got := make(chan seen, 1)
	ts := newTestServer(t, Config{RequestTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		s.handler = time.Now()
		s.at, s.ok = ArrivedAt(r.Context())
		_, s.derivedOK = ArrivedAt(context.WithValue(r.Context(), ctxKey{}, "x"))
		got <- s
	})})
	rc := newRaw(t, ts)
	sent := time.Now()
	rc.request(1, "GET", "/", true)
	if r := rc.readResponse(1); r.status != "200" {
		t.Fatalf("status %s", r.status)
	}
	s := <-got
	if !s.ok || s.at.Before(sent) || s.at.After(s.handler) {
		t.Fatalf("ArrivedAt = %v, %v; want between %v and %v", s.at, s.ok, sent, s.handler)
	}
	if s.derivedOK {
		t.Fatal("ArrivedAt answered for a derived context")
	}
	if _, ok := ArrivedAt(context.Background()); ok {
		t.Fatal("ArrivedAt answered for context.Background")
	}
}
