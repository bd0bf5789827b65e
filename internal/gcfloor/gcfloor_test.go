package gcfloor

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name               string
		floor, live, roots uint64
		base, want         int
	}{
		{"small heap: goal at the floor", 64 * mib, 8 * mib, 0, 100, 700},
		{"roots count as the pacer counts them", 64 * mib, 8 * mib, 8 * mib, 100, 350},
		{"live heap half the floor: base", 64 * mib, 32 * mib, 0, 100, 100},
		{"live heap above the floor: base", 64 * mib, 100 * mib, 0, 100, 100},
		{"live heap equal to the floor: base", 64 * mib, 64 * mib, 0, 100, 100},
		{"a higher base is kept", 64 * mib, 30 * mib, 0, 200, 200},
		{"tiny heap: bounded", 64 * mib, 1, 0, 100, maxPercent},
		{"nothing measured yet: base", 64 * mib, 0, 0, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.floor, tc.live, tc.roots, tc.base); got != tc.want {
				t.Fatalf("Percent(%d, %d, %d, %d) = %d, want %d", tc.floor, tc.live, tc.roots, tc.base, got, tc.want)
			}
		})
	}
}

// recorder collects what a Tuner sets.
type recorder struct {
	mu  sync.Mutex
	set []int
}

func (r *recorder) add(p int) { r.mu.Lock(); r.set = append(r.set, p); r.mu.Unlock() }

func (r *recorder) last() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.set) == 0 {
		return 0, false
	}
	return r.set[len(r.set)-1], true
}

// waitFor runs collections until the last value set satisfies ok.
func waitFor(t *testing.T, r *recorder, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p, set := r.last(); set && ok(p) {
			return
		}
		runtime.GC()
		time.Sleep(time.Millisecond) // let the cleanup goroutine run
	}
	p, _ := r.last()
	t.Fatalf("GOGC never became %s (last set: %d)", what, p)
}

// TestTunerFollowsCollections runs real collections: a small live heap
// raises GOGC, a live heap above the floor brings back the base, and the
// end of the context restores the base for good.
func TestTunerFollowsCollections(t *testing.T) {
	r := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	tu := &Tuner{Floor: 64 << 20, OnSet: r.add}
	tu.Run(ctx)
	defer cancel()

	waitFor(t, r, "raised for a small heap", func(p int) bool { return p > 100 })

	keep := make([]byte, 96<<20) // never written: no resident memory
	waitFor(t, r, "the base with 96 MiB live", func(p int) bool { return p == 100 })
	runtime.KeepAlive(keep)

	waitFor(t, r, "raised again once the heap is small", func(p int) bool { return p > 100 })
	cancel()
	waitFor(t, r, "the base after the context ended", func(p int) bool { return p == 100 })
	n := len(r.set)
	for range 3 {
		runtime.GC()
	}
	if p, _ := r.last(); p != 100 || len(r.set) != n {
		t.Fatalf("a stopped tuner set GOGC again: %v", r.set[n-1:])
	}
}
