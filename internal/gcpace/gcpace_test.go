package gcpace

import (
	"context"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
)

const mib = 1 << 20

func TestHeadroom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     float64
		interval time.Duration
		most     uint64
		want     uint64
	}{
		{"1000 req/s: ten seconds of allocation", 4 * mib, 10 * time.Second, 64 * mib, 40 * mib},
		{"busy: capped", 100 * mib, 10 * time.Second, 64 * mib, 64 * mib},
		{"idle", 0, 10 * time.Second, 64 * mib, 0},
		{"no rate yet (NaN)", math.NaN(), 10 * time.Second, 64 * mib, 0},
		{"negative rate", -1, 10 * time.Second, 64 * mib, 0},
		{"no interval", 40 * mib, 0, 64 * mib, 0},
		{"infinite rate: capped", math.Inf(1), 10 * time.Second, 64 * mib, 64 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Headroom(tc.rate, tc.interval, tc.most); got != tc.want {
				t.Fatalf("Headroom(%v, %v, %d) = %d, want %d", tc.rate, tc.interval, tc.most, got, tc.want)
			}
		})
	}
}

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		headroom, live, roots uint64
		base, want            int
	}{
		{"8 MiB live, 56 MiB headroom", 56 * mib, 8 * mib, 0, 100, 700},
		{"roots count as the pacer counts them", 56 * mib, 7 * mib, 1 * mib, 100, 700},
		{"headroom below what GOGC allows: base", 4 * mib, 8 * mib, 0, 100, 100},
		{"no headroom: base", 0, 8 * mib, 0, 100, 100},
		{"a higher base is kept", 16 * mib, 10 * mib, 0, 200, 200},
		{"small heap: the runtime's 4 MiB x GOGC/100 minimum bounds it", 62 * mib, 2 * mib, 0, 100, 1600},
		{"growth and minimum agree", 60 * mib, 4 * mib, 0, 100, 1500},
		{"tiny heap: the minimum alone sets the goal", 64 * mib, 1, 0, 100, 1600},
		{"huge live heap and headroom: bounded", 1 << 40, 1 * mib, 0, 100, maxPercent},
		{"absurd headroom: base, no overflow", math.MaxUint64, 1 * mib, 0, 100, 100},
		{"nothing measured yet: base", 64 * mib, 0, 0, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.headroom, tc.live, tc.roots, tc.base); got != tc.want {
				t.Fatalf("Percent(%d, %d, %d, %d) = %d, want %d", tc.headroom, tc.live, tc.roots, tc.base, got, tc.want)
			}
		})
	}
}

func TestSmoothRate(t *testing.T) {
	// A 0.2 s burst at 500 MB/s after idling barely moves the average ...
	if got := smoothRate(0, 500e6, 0.2); got > 25e6 {
		t.Fatalf("a 0.2s burst moved the average to %.0f B/s", got)
	}
	// ... while 10 s of 100 MB/s in 50 ms cycles brings it near 100 MB/s.
	avg := 0.0
	for range 200 {
		avg = smoothRate(avg, 100e6, 0.05)
	}
	if avg < 85e6 || avg > 100e6 {
		t.Fatalf("after 10s at 100 MB/s the average is %.0f B/s", avg)
	}
}

// recorder collects what a Tuner sets.
type recorder struct {
	mu  sync.Mutex
	set []int
}

func (r *recorder) add(p int) { r.mu.Lock(); r.set = append(r.set, p); r.mu.Unlock() }

func (r *recorder) last() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.set) == 0 {
		return 0, 0
	}
	return r.set[len(r.set)-1], len(r.set)
}

var sink []byte

// load is a test's workload: each cycle allocates garbage bytes, moves
// the fake clock by elapsed (the time that allocation "took"), then
// collects. A fake clock makes the allocation rate the tuner sees the
// same on any machine: 8 MiB per 100 ms is a busy agent, nothing per 10 s
// an idle one.
type load struct {
	garbage int
	elapsed time.Duration
}

var (
	busy = load{garbage: 8 * mib, elapsed: 100 * time.Millisecond}
	idle = load{garbage: 0, elapsed: 10 * time.Second}
)

func (l load) cycle(clk *clock.Fake) {
	for i := 0; i < l.garbage; i += 64 << 10 {
		sink = make([]byte, 64<<10)
	}
	clk.Advance(l.elapsed)
	runtime.GC()
}

// waitFor runs cycles of l until the last value set satisfies ok. The
// cleanup that applies a cycle runs on its own goroutine, a moment after
// the collection.
func waitFor(t *testing.T, r *recorder, clk *clock.Fake, l load, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p, n := r.last(); n > 0 && ok(p) {
			return
		}
		l.cycle(clk)
		runtime.Gosched()
	}
	p, _ := r.last()
	t.Fatalf("GOGC never became %s (last set: %d)", what, p)
}

// TestTunerFollowsLoad runs real collections: allocating fast raises
// GOGC, a live heap larger than the headroom keeps the base, collections
// without allocation between them bring the base back, and the end of the
// context restores it for good.
func TestTunerFollowsLoad(t *testing.T) {
	r := &recorder{}
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	(&Tuner{MaxHeadroom: 64 * mib, OnSet: r.add, Now: clk.Now}).Run(ctx)

	raised := func(p int) bool { return p > 100 }
	base := func(p int) bool { return p == 100 }
	waitFor(t, r, clk, busy, "raised while allocating fast", raised)

	keep := make([]byte, 96*mib) // never written: no resident memory
	waitFor(t, r, clk, busy, "the base with 96 MiB live", base)
	runtime.KeepAlive(keep)

	waitFor(t, r, clk, busy, "raised again once the live heap is small", raised)
	waitFor(t, r, clk, idle, "the base once allocation stops", base)

	waitFor(t, r, clk, busy, "raised under load once more", raised)
	cancel()
	waitFor(t, r, clk, busy, "the base after the context ended", base)
	_, n := r.last()
	for range 5 {
		busy.cycle(clk)
	}
	if p, n2 := r.last(); n2 != n {
		t.Fatalf("a stopped tuner set GOGC again (to %d)", p)
	}
}
