package proxy

import (
	"github.com/meshguard/meshguard/internal/clock"

	"github.com/meshguard/meshguard/internal/testca"

	"sync"
	"testing"
	"time"
)

func newFakeClock() *clock.Fake { return clock.NewFake(time.Unix(1_800_000_000, 0)) }

// newTestOutbound builds an Outbound that is never Run: enough for the
// picking and health logic, which needs no connections.
func newTestOutbound(t *testing.T, clk *clock.Fake, eps []Endpoint, randN func(int) int) *Outbound {
	t.Helper()
	ca := testca.NewSource(nil, nil)
	peers, err := NewStaticPeers(eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewMetrics(nil)
	ln := listen(t)
	t.Cleanup(func() { ln.Close() })
	o, err := NewOutbound(OutboundConfig{Listener: ln, Source: ca, Peers: peers, Metrics: m, Now: clk.Now, RandIntN: randN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.cancel)
	return o
}

func TestOutlierEjectionGrows(t *testing.T) {
	clk := newFakeClock()
	eps := []Endpoint{{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:1"}}
	o := newTestOutbound(t, clk, eps, nil)
	p := o.peerFor(&eps[0])
	fail := func(n int) {
		for i := 0; i < n; i++ {
			p.failure()
		}
	}
	fail(4)
	if o.pick(eps, nil, clk.Now()) == nil {
		t.Fatal("ejected after 4 failures, threshold is 5")
	}
	p.success() // resets the run
	fail(4)
	if o.pick(eps, nil, clk.Now()) == nil {
		t.Fatal("a success did not reset the consecutive count")
	}
	fail(1)
	if o.pick(eps, nil, clk.Now()) != nil {
		t.Fatal("not ejected after 5 consecutive failures")
	}
	clk.Advance(30*time.Second - time.Nanosecond)
	if o.pick(eps, nil, clk.Now()) != nil {
		t.Fatal("first ejection shorter than 30s")
	}
	clk.Advance(time.Nanosecond)
	if o.pick(eps, nil, clk.Now()) == nil {
		t.Fatal("first ejection longer than 30s")
	}
	fail(5) // second ejection: 60s
	clk.Advance(59 * time.Second)
	if o.pick(eps, nil, clk.Now()) != nil {
		t.Fatal("second ejection did not grow")
	}
	clk.Advance(time.Second)
	if o.pick(eps, nil, clk.Now()) == nil {
		t.Fatal("second ejection longer than 60s")
	}
	for i := 0; i < 20; i++ { // capped at 5m
		fail(5)
		clk.Advance(5 * time.Minute)
	}
	if o.pick(eps, nil, clk.Now()) == nil {
		t.Fatal("ejection exceeded the 5m cap")
	}
}

func TestWeightedSplitByVersion(t *testing.T) {
	clk := newFakeClock()
	eps := []Endpoint{
		{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:1", Labels: map[string]string{"version": "v1"}, Weight: 90},
		{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:2", Labels: map[string]string{"version": "v1"}, Weight: 90},
		{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:3", Labels: map[string]string{"version": "v2"}, Weight: 10},
	}
	var mu sync.Mutex
	seq := 0
	// A deterministic "random" source that sweeps [0, n).
	randN := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		seq++
		return seq % n
	}
	o := newTestOutbound(t, clk, eps, randN)
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		mu.Lock()
		seq = i - 1 // the version draw sees i % 100
		mu.Unlock()
		p := o.pick(eps, nil, clk.Now())
		counts[p.addr]++
	}
	v1 := counts["127.0.0.1:1"] + counts["127.0.0.1:2"]
	if v1 != 900 || counts["127.0.0.1:3"] != 100 {
		t.Fatalf("split %v, want v1=900 v2=100", counts)
	}
	if counts["127.0.0.1:1"] == 0 || counts["127.0.0.1:2"] == 0 {
		t.Fatalf("P2C did not spread within v1: %v", counts)
	}
	// v2 ejected: all traffic to v1.
	v2 := o.peerFor(&eps[2])
	for i := 0; i < 5; i++ {
		v2.failure()
	}
	for i := 0; i < 100; i++ {
		if p := o.pick(eps, nil, clk.Now()); p == v2 {
			t.Fatal("picked an ejected endpoint")
		}
	}
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	clk := newFakeClock()
	eps := []Endpoint{
		{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:1"},
		{Service: "users", ID: svcID("users"), Addr: "127.0.0.1:2"},
	}
	o := newTestOutbound(t, clk, eps, func(n int) int { return 0 })
	a, b := o.peerFor(&eps[0]), o.peerFor(&eps[1])
	a.observe(50*time.Millisecond, clk.Now())
	b.observe(time.Millisecond, clk.Now())
	if p := o.pick(eps, nil, clk.Now()); p != b {
		t.Fatal("P2C picked the slower endpoint")
	}
	b.inflight.Store(100)
	if p := o.pick(eps, nil, clk.Now()); p != a {
		t.Fatal("P2C ignored in-flight load")
	}
	// Exclusion: a tried endpoint is skipped while another is healthy.
	b.inflight.Store(0)
	if p := o.pick(eps, []*peer{b}, clk.Now()); p != a {
		t.Fatal("tried endpoint picked again")
	}
}

func TestRetryBudget(t *testing.T) {
	clk := newFakeClock()
	b := newBudget(RetryBudget{Ratio: 0.2, MinPerSecond: 1, TTL: 10 * time.Second})
	// Reserve: MinPerSecond × TTL = 10 retries with no traffic.
	for i := 0; i < 10; i++ {
		if !b.withdraw(clk.Now()) {
			t.Fatalf("retry %d refused within the reserve", i)
		}
	}
	if b.withdraw(clk.Now()) {
		t.Fatal("retry past the reserve allowed")
	}
	// 100 requests add 20 more.
	for i := 0; i < 100; i++ {
		b.deposit(clk.Now())
	}
	for i := 0; i < 20; i++ {
		if !b.withdraw(clk.Now()) {
			t.Fatalf("retry %d refused within 20%% of traffic", i)
		}
	}
	if b.withdraw(clk.Now()) {
		t.Fatal("retry past 20% allowed")
	}
	// The window slides: after TTL everything is forgotten.
	clk.Advance(11 * time.Second)
	if !b.withdraw(clk.Now()) {
		t.Fatal("budget did not recover after the window")
	}
}
