package gcpace

import (
	"context"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"
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
	if got := smoothRate(0, 500e6, 0.2, rateTau); got > 25e6 {
		t.Fatalf("a 0.2s burst moved the average to %.0f B/s", got)
	}
	// ... while 10 s of 100 MB/s in 50 ms cycles brings it near 100 MB/s.
	avg := 0.0
	for range 200 {
		avg = smoothRate(avg, 100e6, 0.05, rateTau)
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

// cycle allocates garbage bytes (about as fast as the machine can: a busy
// agent) then collects.
func cycle(garbage int) {
	for i := 0; i < garbage; i += 64 << 10 {
		sink = make([]byte, 64<<10)
	}
	runtime.GC()
}

// waitFor runs cycles until the last value set satisfies ok.
func waitFor(t *testing.T, r *recorder, garbage int, what string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if p, n := r.last(); n > 0 && ok(p) {
			return
		}
		cycle(garbage)
		runtime.Gosched() // let the cleanup goroutine run
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A short average (50 ms): the test's cycles take milliseconds.
	(&Tuner{MaxHeadroom: 64 * mib, OnSet: r.add, tau: 0.05}).Run(ctx)

	waitFor(t, r, 8*mib, "raised while allocating fast", func(p int) bool { return p > 100 })

	keep := make([]byte, 96*mib) // never written: no resident memory
	waitFor(t, r, 8*mib, "the base with 96 MiB live", func(p int) bool { return p == 100 })
	runtime.KeepAlive(keep)

	waitFor(t, r, 8*mib, "raised again once the live heap is small", func(p int) bool { return p > 100 })
	waitFor(t, r, 0, "the base once allocation stops", func(p int) bool { return p == 100 })

	waitFor(t, r, 8*mib, "raised under load once more", func(p int) bool { return p > 100 })
	cancel()
	waitFor(t, r, 8*mib, "the base after the context ended", func(p int) bool { return p == 100 })
	_, n := r.last()
	for range 5 {
		cycle(8 * mib)
	}
	if p, n2 := r.last(); n2 != n {
		t.Fatalf("a stopped tuner set GOGC again (to %d)", p)
	}
}
