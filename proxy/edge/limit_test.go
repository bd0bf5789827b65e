package edge

import (
	"github.com/meshguard/meshguard/internal/clock"

	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// newFakeClock is a manually advanced clock at a fixed start.
func newFakeClock() *clock.Fake { return clock.NewFake(time.Unix(1_700_000_000, 0)) }

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr string
	}{
		{in: "100/s", want: 100},
		{in: "100r/s", want: 100},
		{in: "6000/m", want: 100},
		{in: "36/h", want: 0.01},
		{in: "100", wantErr: `rate "100": want N/s, N/m or N/h`},
		{in: "0/s", wantErr: `"0" is not a positive number`},
		{in: "-5/s", wantErr: `"-5" is not a positive number`},
		{in: "NaN/s", wantErr: `"NaN" is not a positive number`},
		{in: "Inf/s", wantErr: `"Inf" is not a positive number`},
		{in: "10/d", wantErr: `unit "d", want s, m or h`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.wantErr != "" {
				if err == nil || !contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRate = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestLimiterNginxBurst is nginx's `limit_req zone=... rate=10r/s burst=280
// nodelay`: 300 requests at one instant admit exactly the first 281 (one for
// the empty bucket plus the burst), refuse the rest, and do not touch another
// client.
func TestLimiterNginxBurst(t *testing.T) {
	clock := newFakeClock()
	l, err := NewLimiter(Rate{PerSecond: 10, Burst: 280}, 100, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	admitted := 0
	firstRefused := -1
	for i := 0; i < 300; i++ {
		if ok, _ := l.Allow("198.51.100.7"); ok {
			admitted++
		} else if firstRefused < 0 {
			firstRefused = i
		}
	}
	if admitted != 281 || firstRefused != 281 {
		t.Fatalf("admitted %d (first refused #%d), want exactly the first 281", admitted, firstRefused)
	}
	if ok, _ := l.Allow("203.0.113.9"); !ok {
		t.Fatal("another client was limited")
	}
	// At 10/s, a tenth of a second frees one request, and only one.
	clock.Advance(100 * time.Millisecond)
	if ok, _ := l.Allow("198.51.100.7"); !ok {
		t.Fatal("not admitted after the bucket drained by one")
	}
	if ok, retry := l.Allow("198.51.100.7"); ok || retry <= 0 || retry > 100*time.Millisecond {
		t.Fatalf("second request after one drain: ok=%v retry=%v, want refused with 0<retry<=100ms", ok, retry)
	}
}

func TestLimiterRefusalsDoNotConsume(t *testing.T) {
	clock := newFakeClock()
	l, _ := NewLimiter(Rate{PerSecond: 1, Burst: 0}, 10, clock.Now)
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("first request refused")
	}
	for i := 0; i < 50; i++ {
		if ok, _ := l.Allow("k"); ok {
			t.Fatalf("request %d admitted within the same second", i)
		}
	}
	clock.Advance(time.Second)
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("refused requests were counted: the key is still limited after a full period")
	}
}

func TestLimiterClockGoingBack(t *testing.T) {
	clock := newFakeClock()
	l, _ := NewLimiter(Rate{PerSecond: 1, Burst: 1}, 10, clock.Now)
	l.Allow("k")
	l.Allow("k")
	clock.Advance(-time.Hour)
	if ok, _ := l.Allow("k"); ok {
		t.Fatal("a clock going back drained the bucket")
	}
}

func TestLimiterMemoryBounded(t *testing.T) {
	l, _ := NewLimiter(Rate{PerSecond: 1, Burst: 1}, 1000, newFakeClock().Now)
	for i := 0; i < 100_000; i++ {
		l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
	}
	if l.Len() != 1000 {
		t.Fatalf("tracked %d keys, want the bound 1000", l.Len())
	}
}

func TestNewLimiterRefusesBadConfig(t *testing.T) {
	if _, err := NewLimiter(Rate{PerSecond: 0, Burst: 1}, 10, nil); err == nil {
		t.Fatal("zero rate accepted")
	}
	if _, err := NewLimiter(Rate{PerSecond: 1, Burst: -1}, 10, nil); err == nil {
		t.Fatal("negative burst accepted")
	}
	if _, err := NewLimiter(Rate{PerSecond: 1}, 0, nil); err == nil {
		t.Fatal("zero key bound accepted")
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l, _ := NewLimiter(Rate{PerSecond: 0.001, Burst: 99}, 10, newFakeClock().Now)
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if ok, _ := l.Allow("same"); ok {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if admitted != 100 {
		t.Fatalf("admitted %d under concurrency, want exactly 100 (1 + burst 99)", admitted)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
