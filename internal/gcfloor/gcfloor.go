// Package gcfloor keeps Go's garbage collector from running many times a
// second when the live heap is small.
//
// With the default GOGC=100 the collector runs whenever the heap has grown
// by as much as was live after the last cycle. An agent's live heap is a
// few megabytes while it allocates a few kilobytes per request, so at tens
// of thousands of requests a second it collects 15 to 25 times a second and
// spends about a sixth of its CPU on it (bench/mesh.sh, pprof). A floor
// raises GOGC after every cycle so that the next one starts near Floor
// bytes of heap; once the live heap is large enough GOGC is back at its
// base value, so memory still grows in proportion to what is live. The
// cost is memory: the heap can reach Floor before a collection. A memory
// limit (GOMEMLIMIT) still applies and wins over the floor.
package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// maxPercent bounds the GOGC a floor may set (a live heap of a few bytes
// would otherwise ask for an absurd one).
const maxPercent = 100000

// Percent returns the GOGC that puts the next heap goal at about floor bytes,
// given what the last cycle left live (heap objects, plus goroutine stacks
// and globals, which Go's pacer counts too), never below base.
func Percent(floor, live, roots uint64, base int) int {
	scan := live + roots
	if scan == 0 || floor <= live {
		return base
	}
	p := (floor - live) * 100 / scan
	if p > maxPercent {
		p = maxPercent
	}
	return max(int(p), base)
}

// Tuner applies a floor after every collection until its context ends.
type Tuner struct {
	// Floor is the heap size, in bytes, below which the collector should
	// not need to run.
	Floor uint64
	// Base is the GOGC to keep once the live heap is large (100 when 0).
	Base int
	// OnSet, when not nil, observes every change (tests).
	OnSet func(percent int)

	mu      sync.Mutex
	stopped bool
	current int
	samples []metrics.Sample
}

// sentinel is allocated once per cycle: its cleanup runs after the
// collection that found it unreachable. It holds a pointer so that it is
// never batched into a tiny allocation, whose cleanup may never run.
type sentinel struct {
	_ *byte
	_ [8]byte
}

// Run applies the floor until ctx ends, then restores Base. It returns at
// once; the work happens after each collection.
func (t *Tuner) Run(ctx context.Context) {
	if t.Base == 0 {
		t.Base = 100
	}
	t.samples = []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
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

// apply sets GOGC from what the last collection left live; false once the
// tuner has stopped.
func (t *Tuner) apply() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.samples)
	var v [3]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	t.set(Percent(t.Floor, v[0], v[1]+v[2], t.Base))
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
