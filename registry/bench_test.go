package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
)

const (
	benchEntries  = 10000
	benchServices = 1000
	benchWatchers = 1000
)

func benchEntry(i int) registry.Entry {
	svc := fmt.Sprintf("svc%04d", i%benchServices)
	e := registry.Entry{
		Service:  svc,
		SPIFFEID: svcID(svc),
		Address:  fmt.Sprintf("10.%d.%d.%d:15443", i/65536, (i/256)%256, i%256),
		Routes:   []string{"/" + svc},
		Labels:   map[string]string{"version": "v1"},
	}
	e.Normalize()
	return e
}

// load puts n entries with 32 writers.
func load(b *testing.B, st registry.Store, n int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	next := atomic.Int64{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if _, err := st.Put(context.Background(), benchEntry(i), time.Hour); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// fanout is 1,000 agent watchers, each over its own HTTP/2 stream to the
// registry API, each holding its own table.
type fanout struct {
	st       registry.Store
	target   atomic.Int64
	arrived  []atomic.Int64 // unix nanos when watcher i saw target
	pending  atomic.Int64
	allIn    chan struct{}
	stop     func()
	watchers []*registry.Watcher
}

func newFanout(b *testing.B, st registry.Store) *fanout {
	b.Helper()
	load(b, st, benchEntries)
	m := serve(keeper{}, testca.New(b, td), st)
	f := &fanout{st: st, arrived: make([]atomic.Int64, benchWatchers), allIn: make(chan struct{}, 1)}
	f.target.Store(-1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	hc := m.httpClient(svcID("web"))
	for i := range benchWatchers {
		c, err := registry.NewClient(hc, m.srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		w, err := registry.NewWatcher(registry.WatcherConfig{Client: c, Logger: quietLogger(), OnChange: func(t *registry.Table) {
			if t.Revision() == f.target.Load() && f.arrived[i].CompareAndSwap(0, time.Now().UnixNano()) {
				if f.pending.Add(-1) == 0 {
					f.allIn <- struct{}{}
				}
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		f.watchers = append(f.watchers, w)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	f.stop = func() { cancel(); wg.Wait() }
	keeper{}.Cleanup(f.stop)
	deadline := time.Now().Add(10 * time.Minute)
	for _, w := range f.watchers {
		for w.Table().Len() != benchEntries {
			if time.Now().After(deadline) {
				b.Fatalf("watchers did not load the snapshot")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return f
}

// change puts one entry and returns how long each watcher took to see it.
func (f *fanout) change(b *testing.B, i int) (perWatcher []time.Duration, all time.Duration) {
	e := benchEntry(i % benchEntries)
	e.Labels = map[string]string{"version": fmt.Sprintf("v%d", i)}
	for j := range f.arrived {
		f.arrived[j].Store(0)
	}
	f.pending.Store(benchWatchers)
	// The revision is known only after the put; watchers that see it
	// before target is set catch up below.
	f.target.Store(-1)
	start := time.Now()
	got, err := f.st.Put(context.Background(), e, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	f.target.Store(got.Revision)
	for j, w := range f.watchers {
		if w.Table().Revision() >= got.Revision && f.arrived[j].CompareAndSwap(0, time.Now().UnixNano()) {
			if f.pending.Add(-1) == 0 {
				f.allIn <- struct{}{}
			}
		}
	}
	select {
	case <-f.allIn:
	case <-time.After(2 * time.Minute):
		b.Fatalf("change %d reached only %d of %d watchers", got.Revision, benchWatchers-int(f.pending.Load()), benchWatchers)
	}
	for j := range f.arrived {
		d := time.Duration(f.arrived[j].Load() - start.UnixNano())
		perWatcher = append(perWatcher, d)
		all = max(all, d)
	}
	return perWatcher, all
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	idx := int(float64(len(ds)-1) * p)
	return ds[idx]
}

var (
	fanoutMu    sync.Mutex
	fanoutCache = map[string]*fanout{}
)

// BenchmarkWatchFanout: 10,000 entries, 1,000 watchers (each a
// registry.Watcher on its own watch stream through the API), one change per
// iteration. Reports the p99 over changes of the time for the change to
// reach every watcher ("p99-all-ms"), and the p50/p99 per watcher.
//
//	go test -run '^$' -bench WatchFanout -benchtime 30x ./registry/
func BenchmarkWatchFanout(b *testing.B) {
	for _, name := range []string{"bolt", "etcd"} {
		b.Run(name, func(b *testing.B) {
			// The fixture takes a while; Go calls a benchmark more than once.
			fanoutMu.Lock()
			f := fanoutCache[name]
			if f == nil {
				var st registry.Store
				if name == "bolt" {
					st = openBolt(keeper{}, clock.NewFake(time.Now()))
				} else {
					st = openEtcd(keeper{}, newEtcdPrefix())
				}
				f = newFanout(b, st)
				fanoutCache[name] = f
			}
			fanoutMu.Unlock()
			var alls, each []time.Duration
			b.ResetTimer()
			for i := range b.N {
				per, all := f.change(b, i)
				alls = append(alls, all)
				each = append(each, per...)
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(alls, 0.99).Microseconds())/1000, "p99-all-ms")
			b.ReportMetric(float64(percentile(each, 0.50).Microseconds())/1000, "p50-watcher-ms")
			b.ReportMetric(float64(percentile(each, 0.99).Microseconds())/1000, "p99-watcher-ms")
		})
	}
}

// BenchmarkTableMemory reports the heap held by one agent's table of
// 10,000 entries, built as the watcher builds it (decoded from JSON).
//
//	go test -run '^$' -bench TableMemory ./registry/
func BenchmarkTableMemory(b *testing.B) {
	entries := make([]registry.Entry, benchEntries)
	for i := range entries {
		entries[i] = benchEntry(i)
	}
	raw, err := json.Marshal(entries)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var held uint64
	for range b.N {
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		var decoded []registry.Entry
		if err := json.Unmarshal(raw, &decoded); err != nil {
			b.Fatal(err)
		}
		t := registry.NewTable(1, decoded)
		decoded = nil
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		held = ms1.HeapAlloc - ms0.HeapAlloc
		runtime.KeepAlive(t)
	}
	b.ReportMetric(float64(held), "heap-B/table")
	b.ReportMetric(float64(held)/benchEntries, "heap-B/entry")
}
