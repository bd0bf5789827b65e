package identity

import (
	"crypto/x509"
	"math"
	"time"
)

// RotationJitter is the spread around half of the SVID lifetime at which a
// rotation is scheduled: 0.1 means anywhere from 40% to 60% of the lifetime,
// so agents started together do not all renew at the same instant.
const RotationJitter = 0.1

// NextRotation is when an SVID should be renewed: at half its lifetime
// (NotBefore to NotAfter), moved by jitter in [-1, 1] times RotationJitter of
// the lifetime. When that time is already past (a short-lived certificate
// backdated for clock skew, or a restart late in its life) it is the same
// fraction of the remaining lifetime from now; an expired certificate
// yields now. It is a pure function: the caller draws the jitter once per
// certificate.
func NextRotation(now time.Time, cert *x509.Certificate, jitter float64) time.Time {
	if cert == nil {
		return now
	}
	if math.IsNaN(jitter) {
		jitter = 0
	}
	jitter = math.Max(-1, math.Min(1, jitter))
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	if lifetime <= 0 {
		return now
	}
	frac := 0.5 + RotationJitter*jitter
	at := cert.NotBefore.Add(time.Duration(float64(lifetime) * frac))
	if at.After(now) {
		return at
	}
	// Past the point already: a certificate backdated by more than its
	// remaining half (short TTLs), or a restart late in its life. Renew at
	// the same fraction of what is left, never in a tight loop; an expired
	// one at once.
	left := cert.NotAfter.Sub(now)
	if left <= 0 {
		return now
	}
	return now.Add(time.Duration(float64(left) * frac))
}

// Backoff is the wait before retry number attempt (0 for the first retry)
// after a failed renewal: min doubled per attempt, capped at max.
func Backoff(attempt int, min, max time.Duration) time.Duration {
	if min <= 0 {
		min = time.Second
	}
	if max < min {
		max = min
	}
	d := min
	for i := 0; i < attempt; i++ {
		if d >= max/2 {
			return max
		}
		d *= 2
	}
	return d
}
