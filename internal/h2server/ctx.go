package h2server

import (
	"context"
	"sync"
	"time"
)

// streamCtx is a request's context, part of its stream: no allocation,
// and no registration in a parent's child set. context.WithCancel under
// a shared parent (the connection's, or a deadline slot's) registers each
// request in that parent's child map under its mutex and allocates the
// context, the map entry and, on the first Done, a channel; AfterFunc on
// it (the agent's HTTP/1.1 client calls it per request) did the same
// again: 7% of an agent's CPU under load.
//
// It carries the connection's values (base), the deadline of the slot it
// was opened in, and its own cancellation: by the stream's end (reset,
// handler done, connection closed) or by the slot's deadline.
// AfterFunc is the method context.AfterFunc and context.WithCancel use for
// a parent that is not one of theirs, and callers may use it directly.
type streamCtx struct {
	base    context.Context
	slot    *deadlineSlot // nil: no deadline
	arrived time.Time     // when the request's HEADERS were taken in

	mu    sync.Mutex
	done  chan struct{} // made by the first Done, or closedChan
	err   error
	funcs []afterFunc
	arr   [1]afterFunc // funcs' first backing array
	next  uint64       // afterFunc ids

	// In slot's list (guarded by slot.mu).
	prev, succ *streamCtx
	inSlot     bool
}

type afterFunc struct {
	id uint64
	f  func()
}

// closedChan is the Done channel of a context canceled before anyone
// asked for it.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// init sets up c (zero) under base, with slot's deadline if slot is not
// nil, for a request that arrived at now.
func (c *streamCtx) init(base context.Context, slot *deadlineSlot, now time.Time) {
	c.base, c.slot, c.arrived = base, slot, now
	c.funcs = c.arr[:0]
	if slot != nil {
		slot.join(c)
	}
}

func (c *streamCtx) Deadline() (time.Time, bool) {
	if c.slot == nil {
		return time.Time{}, false
	}
	return c.slot.deadline, true
}

func (c *streamCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *streamCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *streamCtx) Value(key any) any { return c.base.Value(key) }

func (c *streamCtx) String() string { return "h2server.streamCtx" }

// AfterFunc arranges for f to run in its own goroutine once c is done, as
// context.AfterFunc does; stop reports whether it kept f from running.
func (c *streamCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.next++
	id := c.next
	c.funcs = append(c.funcs, afterFunc{id, f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, af := range c.funcs {
			if af.id == id {
				c.funcs = append(c.funcs[:i], c.funcs[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel ends c with err (the first call wins) and starts its AfterFuncs.
func (c *streamCtx) cancel(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	if c.slot != nil {
		c.slot.leave(c)
	}
	for _, af := range funcs {
		go af.f()
	}
}

// deadlineSlot ends, at its deadline, the contexts of the streams opened
// within one time slot: one timer for them all, where a context per
// request with its own deadline would run a timer per request.
type deadlineSlot struct {
	deadline time.Time
	timer    *time.Timer

	mu      sync.Mutex
	head    *streamCtx
	expired bool
}

func newDeadlineSlot(deadline time.Time) *deadlineSlot {
	s := &deadlineSlot{deadline: deadline}
	s.timer = time.AfterFunc(time.Until(deadline), s.expire)
	return s
}

// join adds c, or cancels it at once if the deadline has passed.
func (s *deadlineSlot) join(c *streamCtx) {
	s.mu.Lock()
	if s.expired {
		s.mu.Unlock()
		c.cancel(context.DeadlineExceeded)
		return
	}
	c.succ = s.head
	if s.head != nil {
		s.head.prev = c
	}
	s.head, c.inSlot = c, true
	s.mu.Unlock()
}

// leave removes c (done before the deadline).
func (s *deadlineSlot) leave(c *streamCtx) {
	s.mu.Lock()
	if c.inSlot {
		if c.prev != nil {
			c.prev.succ = c.succ
		} else {
			s.head = c.succ
		}
		if c.succ != nil {
			c.succ.prev = c.prev
		}
		c.prev, c.succ, c.inSlot = nil, nil, false
	}
	s.mu.Unlock()
}

// expire cancels every member with context.DeadlineExceeded.
func (s *deadlineSlot) expire() {
	s.mu.Lock()
	s.expired = true
	var members []*streamCtx
	for c := s.head; c != nil; {
		next := c.succ
		c.prev, c.succ, c.inSlot = nil, nil, false
		members = append(members, c)
		c = next
	}
	s.head = nil
	s.mu.Unlock()
	for _, c := range members {
		c.cancel(context.DeadlineExceeded)
	}
}

// stop releases the timer of a slot whose streams have all ended.
func (s *deadlineSlot) stop() { s.timer.Stop() }

// ArrivedAt returns when the server took in the HEADERS of the request
// whose context ctx is (ok false for any other context, including one
// derived from it). The same clock reading set the request's deadline, so
// layers of a proxy that would each read the clock at the start of a
// request can share it (a reading costs about 100 ns on a VM).
func ArrivedAt(ctx context.Context) (t time.Time, ok bool) {
	if c, isStream := ctx.(*streamCtx); isStream {
		return c.arrived, true
	}
	return time.Time{}, false
}
