package h2server

import (
	"sync"
	"time"
)

// handlerPool keeps the goroutines that ran handlers and now wait for the
// next stream (of any connection). A new goroutine per request would grow
// its stack again through the proxy's call depth every time
// (runtime.newstack was 7-8% of the inbound agent's CPU); one shared
// channel with an idle timer per goroutine cost a contended channel lock
// and a timer reset per request (4-5% of the edge's CPU). Here each idle
// goroutine waits on its own channel, the most recently idle is reused
// first (its stack and cache are warm), and a janitor retires those idle
// for at least one full janitor period. An idle goroutine waits on its
// channel alone (a select that also watched a stop channel locked both
// channels per request: 2-3% of the edge's CPU); shut sends each one nil.
type handlerPool struct {
	every time.Duration   // janitor period
	stop  <-chan struct{} // ends the janitor

	mu      sync.Mutex
	idle    []*handlerWorker // oldest first; reuse takes the last
	tick    uint64           // janitor periods so far
	janitor bool             // started
	shut    bool             // set by close: workers going idle end
}

// handlerWorker is one idle handler goroutine's mailbox.
type handlerWorker struct {
	next  chan *stream // capacity 1; nil: retire
	since uint64       // pool tick when it went idle
}

// take removes the most recently idle worker, or returns nil when none
// waits. The caller must send exactly one stream to its next channel.
func (p *handlerPool) take() *handlerWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	w := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return w
}

// wait parks w until a stream is handed to it (returned), or until the
// janitor retires it or the pool is closed (nil).
func (p *handlerPool) wait(w *handlerWorker) *stream {
	p.mu.Lock()
	if p.shut {
		p.mu.Unlock()
		return nil
	}
	w.since = p.tick
	p.idle = append(p.idle, w)
	if !p.janitor {
		p.janitor = true
		go p.runJanitor()
	}
	p.mu.Unlock()
	// A stream from take's caller, or nil from retire or close. A worker
	// that take removed gets its stream even if close comes meanwhile.
	return <-w.next
}

// close ends every idle worker, and every worker that goes idle later
// (the server stopped).
func (p *handlerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shut = true
	for i, w := range p.idle {
		w.next <- nil // capacity 1, empty: no stream was handed to an idle worker
		p.idle[i] = nil
	}
	p.idle = nil
}

// runJanitor retires, every period, the workers that were already idle
// at the previous one, until the server stops.
func (p *handlerPool) runJanitor() {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.retire()
		case <-p.stop:
			return
		}
	}
}

func (p *handlerPool) retire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tick++
	n := 0
	for n < len(p.idle) && p.idle[n].since+2 <= p.tick {
		p.idle[n].next <- nil
		n++
	}
	if n > 0 {
		rest := copy(p.idle, p.idle[n:])
		clear(p.idle[rest:])
		p.idle = p.idle[:rest]
	}
}
