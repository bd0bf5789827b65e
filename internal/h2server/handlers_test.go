package h2server

import (
	"testing"
	"time"
)

// parked starts a goroutine waiting in p with a new worker and returns
// the worker and what wait returned (once it returns).
func parked(t *testing.T, p *handlerPool) (*handlerWorker, <-chan *stream) {
	t.Helper()
	w := &handlerWorker{next: make(chan *stream, 1)}
	got := make(chan *stream, 1)
	before := p.idleCount()
	go func() { got <- p.wait(w) }()
	deadline := time.Now().Add(5 * time.Second)
	for p.idleCount() == before {
		if time.Now().After(deadline) {
			t.Fatal("worker did not park")
		}
		time.Sleep(time.Millisecond)
	}
	return w, got
}

func (p *handlerPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

func recv(t *testing.T, ch <-chan *stream) *stream {
	t.Helper()
	select {
	case st := <-ch:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return")
		return nil
	}
}

func TestHandlerPoolReusesMostRecentlyIdle(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	p := &handlerPool{every: time.Hour, stop: stop}
	if p.take() != nil {
		t.Fatal("take on an empty pool returned a worker")
	}
	w1, got1 := parked(t, p)
	w2, got2 := parked(t, p)
	if w := p.take(); w != w2 {
		t.Fatal("take did not return the most recently idle worker")
	}
	st := &stream{id: 7}
	w2.next <- st
	if recv(t, got2) != st {
		t.Fatal("the worker did not get the stream handed to it")
	}
	if w := p.take(); w != w1 {
		t.Fatal("the older worker was not next")
	}
	w1.next <- st
	recv(t, got1)
	if p.take() != nil {
		t.Fatal("pool not empty")
	}
}

func TestHandlerPoolRetiresIdle(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	p := &handlerPool{every: time.Hour, stop: stop}
	_, oldGot := parked(t, p)
	p.retire() // tick 1: old idle since tick 0, kept (may have just parked)
	if p.idleCount() != 1 {
		t.Fatal("a worker idle for less than a full period was retired")
	}
	_, newGot := parked(t, p) // idle since tick 1
	p.retire()                // tick 2: old idle a full period, retired
	if st := recv(t, oldGot); st != nil {
		t.Fatalf("retired worker got stream %v", st)
	}
	if p.idleCount() != 1 {
		t.Fatalf("idle = %d, want 1 (the newer worker)", p.idleCount())
	}
	p.retire() // tick 3: newer one retired too
	if st := recv(t, newGot); st != nil {
		t.Fatalf("retired worker got stream %v", st)
	}
	if p.take() != nil {
		t.Fatal("retired worker still in the pool")
	}
}

func TestHandlerPoolStop(t *testing.T) {
	stop := make(chan struct{})
	p := &handlerPool{every: time.Hour, stop: stop}
	_, idleGot := parked(t, p)
	taken, takenGot := parked(t, p)
	if p.take() != taken {
		t.Fatal("take returned the wrong worker")
	}
	p.close()
	close(stop)
	if st := recv(t, idleGot); st != nil {
		t.Fatalf("idle worker got %v after stop", st)
	}
	// A worker taken before the stop still runs the stream handed to it.
	st := &stream{id: 9}
	taken.next <- st
	if got := recv(t, takenGot); got != st {
		t.Fatalf("taken worker got %v, want its stream", got)
	}
	// After the stop a worker going idle ends at once.
	w := &handlerWorker{next: make(chan *stream, 1)}
	if got := p.wait(w); got != nil {
		t.Fatalf("wait after stop = %v", got)
	}
}
