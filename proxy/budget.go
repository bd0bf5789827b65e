package proxy

import (
	"sync"
	"time"
)

// RetryBudget bounds retries to a share of live traffic, as Linkerd and
// Finagle do: within the last TTL, retries may not exceed
// Ratio × requests + MinPerSecond × TTL. Retries are not counted as requests.
type RetryBudget struct {
	Ratio        float64       // default 0.2
	MinPerSecond float64       // default 10
	TTL          time.Duration // window, default 10s
}

func (b RetryBudget) withDefaults() RetryBudget {
	if b.Ratio <= 0 {
		b.Ratio = 0.2
	}
	if b.MinPerSecond <= 0 {
		b.MinPerSecond = 10
	}
	if b.TTL <= 0 {
		b.TTL = 10 * time.Second
	}
	return b
}

const budgetSlots = 10

// budget is one service's retry budget: a ring of per-slot counters.
type budget struct {
	cfg  RetryBudget
	slot time.Duration
	mu   sync.Mutex
	ring [budgetSlots]budgetSlot
}

type budgetSlot struct {
	at            int64 // slot index (unix time / slot)
	reqs, retries int64
}

func newBudget(cfg RetryBudget) *budget {
	cfg = cfg.withDefaults()
	return &budget{cfg: cfg, slot: cfg.TTL / budgetSlots}
}

func (b *budget) cur(now time.Time) *budgetSlot {
	idx := now.UnixNano() / int64(b.slot)
	s := &b.ring[idx%budgetSlots]
	if s.at != idx {
		s.at, s.reqs, s.retries = idx, 0, 0
	}
	return s
}

// deposit records one request.
func (b *budget) deposit(now time.Time) {
	b.mu.Lock()
	b.cur(now).reqs++
	b.mu.Unlock()
}

// withdraw reports whether one retry fits the budget, and records it if so.
func (b *budget) withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	idx := now.UnixNano() / int64(b.slot)
	var reqs, retries int64
	for i := range b.ring {
		if s := &b.ring[i]; idx-s.at < budgetSlots {
			reqs += s.reqs
			retries += s.retries
		}
	}
	allowed := b.cfg.Ratio*float64(reqs) + b.cfg.MinPerSecond*b.cfg.TTL.Seconds()
	if float64(retries+1) > allowed {
		return false
	}
	b.cur(now).retries++
	return true
}
