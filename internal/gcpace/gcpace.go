// Package gcpace keeps Go's garbage collector from running many times a
// second when an agent is busy.
//
// With the default GOGC=100 the collector runs whenever the heap has grown
// by as much as was live after the last cycle. An agent's live heap is a
// few megabytes while it allocates a few kilobytes per request, so at tens
// of thousands of requests a second it collects 15 to 25 times a second
// and spends about a sixth of its CPU on it (bench/mesh.sh, pprof).
//
// Each cycle also costs latency: at 1000 requests a second, bench/mesh.sh
// found about 1% of requests 1-3 ms slower, all within the few
// milliseconds of a collection (none with GOGC=off).
//
// A Tuner measures, after every collection, how fast the program allocated
// since the one before (averaged over a few seconds), and raises GOGC so
// that the next cycle comes about Interval later at that rate: the heap
// may grow by that much, up to MaxHeadroom bytes, above what is live. Idle
// or at low rates the growth GOGC already allows is enough and GOGC stays
// at its base, so the extra memory is only spent under load; under heavy
// load MaxHeadroom bounds it and collections come more often than once
// per Interval. A memory limit (GOMEMLIMIT) still applies and wins.
package gcpace

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// DefaultInterval is the Tuner's Interval when none is given.
const DefaultInterval = 10 * time.Second

// maxPercent bounds the GOGC a Tuner may set.
const maxPercent = 100000

// Headroom returns how many bytes the heap should be allowed to grow
// between two collections for them to come interval apart at allocRate
// bytes a second, capped at most.
func Headroom(allocRate float64, interval time.Duration, most uint64) uint64 {
	if !(allocRate > 0) || interval <= 0 {
		return 0
	}
	h := allocRate * interval.Seconds()
	if h >= float64(most) {
		return most
	}
	return uint64(h)
}

// minHeap is the runtime's heap goal floor at GOGC=100; it scales with
// GOGC (runtime/mgcpacer.go, defaultHeapMinimum).
const minHeap = 4 << 20

// Percent returns the GOGC whose next heap goal lies headroom bytes above
// the live heap, given the last cycle's live heap and its roots (goroutine
// stacks and globals, which Go's pacer counts too), never below base. The
// runtime never sets a goal below 4 MiB × GOGC/100, so with a small heap
// that minimum, not the growth, is what bounds GOGC.
func Percent(headroom, live, roots uint64, base int) int {
	scan := live + roots
	if scan == 0 || headroom > math.MaxUint64/200 {
		return base
	}
	p := min(headroom*100/scan, (live+headroom)*100/minHeap, maxPercent)
	return max(int(p), base)
}

// Tuner sets GOGC after every collection until its context ends.
type Tuner struct {
	// MaxHeadroom is the most, in bytes, the heap may grow above what is
	// live between two collections.
	MaxHeadroom uint64
	// Interval is the time between two collections to aim for (10 s when
	// 0).
	Interval time.Duration
	// Base is the GOGC to keep when it already allows enough growth (100
	// when 0).
	Base int
	// OnSet, when not nil, observes every change (tests).
	OnSet func(percent int)
	// Now is the clock the allocation rate is measured with (time.Now
	// when nil; a fake clock in tests).
	Now func() time.Time

	mu         sync.Mutex
	stopped    bool
	current    int
	samples    []metrics.Sample
	lastAllocs uint64
	lastAt     time.Time
	rate       float64 // bytes allocated per second, smoothed
}

// rateTau is the time constant of the allocation rate average: a burst of
// a fraction of a second (startup, a policy compile) moves it little,
// sustained load within seconds.
const rateTau = 5.0 // seconds

// smoothRate folds a rate measured over d seconds into the average avg.
func smoothRate(avg, rate, d float64) float64 {
	w := math.Exp(-d / rateTau)
	return avg*w + rate*(1-w)
}

// sentinel is allocated once per cycle: its cleanup runs after the
// collection that found it unreachable. It holds a pointer so that it is
// never batched into a tiny allocation, whose cleanup may never run.
type sentinel struct {
	_ *byte
	_ [8]byte
}

// Run tunes GOGC until ctx ends, then restores Base. It returns at once;
// the work happens after each collection.
func (t *Tuner) Run(ctx context.Context) {
	if t.Base == 0 {
		t.Base = 100
	}
	if t.Interval == 0 {
		t.Interval = DefaultInterval
	}
	if t.Now == nil {
		t.Now = time.Now
	}
	t.samples = []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	t.current = -2 // unknown: the first apply always sets it
	t.apply()
	t.arm()
	context.AfterFunc(ctx, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.stopped = true
		t.set(t.Base)
	})
}

// arm registers a cleanup on a fresh unreachable object: it runs once the
// next collection has finished.
func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Tuner) {
		if t.apply() {
			t.arm()
		}
	}, t)
}

// apply sets GOGC from the last cycle's live heap and the allocation rate
// since the previous apply; false once the tuner has stopped.
func (t *Tuner) apply() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.samples)
	var v [4]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	now := t.Now()
	if !t.lastAt.IsZero() && v[3] >= t.lastAllocs {
		if d := now.Sub(t.lastAt).Seconds(); d > 0 {
			t.rate = smoothRate(t.rate, float64(v[3]-t.lastAllocs)/d, d)
		}
	}
	t.lastAllocs, t.lastAt = v[3], now
	t.set(Percent(Headroom(t.rate, t.Interval, t.MaxHeadroom), v[0], v[1]+v[2], t.Base))
	return true
}

// set changes GOGC when p differs from the current value; t.mu is held.
func (t *Tuner) set(p int) {
	if p == t.current {
		return
	}
	t.current = p
	debug.SetGCPercent(p)
	if t.OnSet != nil {
		t.OnSet(p)
	}
}
