package edge

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxClients bounds the clients each limiter remembers.
const DefaultMaxClients = 100_000

// ApplyLimits turns --rate and --burst values into the edge's limiters. A
// value is global ("100/s", "280") or for one exposed prefix ("/users=10/s",
// "/users=20"). The global limit is one bucket per client shared by every
// exposed prefix (as one nginx limit_req zone); a prefix with its own rate or
// burst gets a bucket of its own, with the global value for whichever of the
// two it does not set. It returns the default limiter (nil: no global rate)
// and sets Route.Limiter on the routes of e that have their own.
func ApplyLimits(e *Exposure, rates, bursts []string, maxClients int, now func() time.Time) (*Limiter, error) {
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	var globalRate float64
	globalBurst := 0
	prefixRate := map[string]float64{}
	prefixBurst := map[string]int{}
	exposed := map[string]*Route{}
	for _, r := range e.Routes() {
		exposed[r.Prefix] = r
	}
	for _, v := range rates {
		prefix, val := splitPrefixed(v)
		rate, err := ParseRate(val)
		if err != nil {
			return nil, fmt.Errorf("--rate %q: %w", v, err)
		}
		if prefix == "" {
			globalRate = rate
			continue
		}
		if exposed[prefix] == nil {
			return nil, fmt.Errorf("--rate %q: %s is not exposed", v, prefix)
		}
		prefixRate[prefix] = rate
	}
	for _, v := range bursts {
		prefix, val := splitPrefixed(v)
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 1_000_000 {
			return nil, fmt.Errorf("--burst %q: want a whole number from 0 to 1000000", v)
		}
		if prefix == "" {
			globalBurst = n
			continue
		}
		if exposed[prefix] == nil {
			return nil, fmt.Errorf("--burst %q: %s is not exposed", v, prefix)
		}
		prefixBurst[prefix] = n
	}
	var def *Limiter
	if globalRate > 0 {
		l, err := NewLimiter(Rate{PerSecond: globalRate, Burst: globalBurst}, maxClients, now)
		if err != nil {
			return nil, err
		}
		def = l
	} else if len(bursts) > 0 && len(prefixRate) == 0 {
		return nil, fmt.Errorf("--burst without --rate: give a rate such as --rate 100/s")
	}
	for prefix, r := range exposed {
		rate, hasRate := prefixRate[prefix]
		burst, hasBurst := prefixBurst[prefix]
		if !hasRate && !hasBurst {
			continue
		}
		if !hasRate {
			if globalRate == 0 {
				return nil, fmt.Errorf("--burst %s=%d without a rate for %s or a global --rate", prefix, burst, prefix)
			}
			rate = globalRate
		}
		if !hasBurst {
			burst = globalBurst
		}
		l, err := NewLimiter(Rate{PerSecond: rate, Burst: burst}, maxClients, now)
		if err != nil {
			return nil, err
		}
		r.Limiter = l
	}
	return def, nil
}

// splitPrefixed splits "PREFIX=VALUE" (the prefix starts with /) from "VALUE".
func splitPrefixed(s string) (prefix, value string) {
	if strings.HasPrefix(s, "/") {
		if p, v, ok := strings.Cut(s, "="); ok {
			return p, v
		}
	}
	return "", s
}
