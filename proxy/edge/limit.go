package edge

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Rate is a request rate with nginx limit_req semantics: Rate per second
// with Burst extra requests admitted at once (burst=N nodelay).
type Rate struct {
	PerSecond float64
	Burst     int
}

// ParseRate parses "100/s", "6000/m" or "2/h" (an nginx-style "r/s" suffix
// such as "100r/s" is accepted too).
func ParseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("rate %q: want N/s, N/m or N/h", s)
	}
	num = strings.TrimSuffix(num, "r")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("rate %q: %q is not a positive number", s, num)
	}
	switch unit {
	case "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	}
	return 0, fmt.Errorf("rate %q: unit %q, want s, m or h", s, unit)
}

// Limiter admits or refuses requests per key (a client address, or an API
// key) with nginx's limit_req algorithm: each key has an "excess" that
// drains at the configured rate and grows by one per admitted request; a
// request that would push it above the burst is refused and changes
// nothing. Memory is bounded: the least recently seen keys are forgotten
// once MaxKeys are tracked (a forgotten key starts again with a full burst).
type Limiter struct {
	rate Rate
	now  func() time.Time
	keys *lru.Cache[string, *bucket]
}

type bucket struct {
	mu     sync.Mutex
	excess float64 // in requests
	last   time.Time
}

// NewLimiter returns a limiter for rate, tracking at most maxKeys keys.
// now is the clock (time.Now in production, a fake clock in tests).
func NewLimiter(rate Rate, maxKeys int, now func() time.Time) (*Limiter, error) {
	if rate.PerSecond <= 0 || rate.Burst < 0 {
		return nil, fmt.Errorf("limiter: rate %v/s burst %d: want a positive rate and a burst >= 0", rate.PerSecond, rate.Burst)
	}
	if maxKeys <= 0 {
		return nil, fmt.Errorf("limiter: max keys %d: want > 0", maxKeys)
	}
	cache, err := lru.New[string, *bucket](maxKeys)
	if err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, now: now, keys: cache}, nil
}

// Allow reports whether a request for key is admitted now; when it is not,
// retryAfter says how long until one would be.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	b, found := l.keys.Get(key)
	if !found {
		nb := &bucket{last: now}
		// Another request may have added the key meanwhile; use the stored one.
		if prev, loaded, _ := l.keys.PeekOrAdd(key, nb); loaded {
			b = prev
		} else {
			return true, 0 // a new key's first request: excess starts at zero
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	elapsed := now.Sub(b.last).Seconds()
	if elapsed < 0 {
		elapsed = 0 // the clock went back: drain nothing
	}
	excess := b.excess - l.rate.PerSecond*elapsed + 1
	if excess < 0 {
		excess = 0
	}
	if excess > float64(l.rate.Burst) {
		wait := (excess - float64(l.rate.Burst)) / l.rate.PerSecond
		return false, time.Duration(wait * float64(time.Second))
	}
	b.excess, b.last = excess, now
	return true, 0
}

// Len is the number of keys tracked.
func (l *Limiter) Len() int { return l.keys.Len() }
