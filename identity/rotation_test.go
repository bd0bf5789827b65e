package identity

import (
	"crypto/x509"
	"math"
	"testing"
	"time"
)

func TestNextRotation(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hour := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(time.Hour)}
	tests := []struct {
		name   string
		now    time.Time
		cert   *x509.Certificate
		jitter float64
		want   time.Time
	}{
		{name: "half, no jitter", now: nb, cert: hour, jitter: 0, want: nb.Add(30 * time.Minute)},
		{name: "earliest", now: nb, cert: hour, jitter: -1, want: nb.Add(24 * time.Minute)},
		{name: "latest", now: nb, cert: hour, jitter: 1, want: nb.Add(36 * time.Minute)},
		{name: "half jitter", now: nb, cert: hour, jitter: 0.5, want: nb.Add(33 * time.Minute)},
		{name: "jitter clamped high", now: nb, cert: hour, jitter: 7, want: nb.Add(36 * time.Minute)},
		{name: "jitter clamped low", now: nb, cert: hour, jitter: -7, want: nb.Add(24 * time.Minute)},
		{name: "NaN jitter is none", now: nb, cert: hour, jitter: math.NaN(), want: nb.Add(30 * time.Minute)},
		{name: "past rotation time: half of what is left", now: nb.Add(40 * time.Minute), cert: hour, jitter: 0, want: nb.Add(50 * time.Minute)},
		{name: "past rotation time with jitter", now: nb.Add(40 * time.Minute), cert: hour, jitter: 1, want: nb.Add(52 * time.Minute)},
		{name: "short TTL backdated a minute", now: nb.Add(time.Minute), cert: &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(70 * time.Second)}, jitter: 0, want: nb.Add(65 * time.Second)},
		{name: "exactly at the rotation time: half of what is left", now: nb.Add(30 * time.Minute), cert: hour, jitter: 0, want: nb.Add(45 * time.Minute)},
		{name: "exactly at expiry is now", now: nb.Add(time.Hour), cert: hour, jitter: 0, want: nb.Add(time.Hour)},
		{name: "expired is now", now: nb.Add(2 * time.Hour), cert: hour, jitter: 0, want: nb.Add(2 * time.Hour)},
		{name: "inverted validity is now", now: nb, cert: &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(-time.Hour)}, want: nb},
		{name: "nil certificate is now", now: nb, cert: nil, want: nb},
		{name: "ten minutes", now: nb, cert: &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(10 * time.Minute)}, jitter: 0, want: nb.Add(5 * time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NextRotation(tc.now, tc.cert, tc.jitter); !got.Equal(tc.want) {
				t.Fatalf("NextRotation = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name     string
		attempt  int
		min, max time.Duration
		want     time.Duration
	}{
		{name: "first", attempt: 0, min: time.Second, max: time.Minute, want: time.Second},
		{name: "second", attempt: 1, min: time.Second, max: time.Minute, want: 2 * time.Second},
		{name: "fifth", attempt: 5, min: time.Second, max: time.Minute, want: 32 * time.Second},
		{name: "capped", attempt: 6, min: time.Second, max: time.Minute, want: time.Minute},
		{name: "capped far out (no overflow)", attempt: 10000, min: time.Second, max: time.Minute, want: time.Minute},
		{name: "zero min defaults to 1s", attempt: 0, min: 0, max: time.Minute, want: time.Second},
		{name: "max below min is min", attempt: 3, min: time.Second, max: 0, want: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Backoff(tc.attempt, tc.min, tc.max); got != tc.want {
				t.Fatalf("Backoff = %s, want %s", got, tc.want)
			}
		})
	}
}
