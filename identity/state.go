package identity

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Clock is the time the sources run on. Production uses the system clock;
// tests use a fake one (internal/clock) and move it without sleeping.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// ErrNoSVID is returned by GetX509SVID before the first SVID is obtained.
var ErrNoSVID = errors.New("identity: no SVID obtained yet")

// Status is a snapshot of an identity source for /status and logs.
type Status struct {
	Source            string    `json:"source"`
	SPIFFEID          string    `json:"spiffe_id,omitempty"`
	NotBefore         time.Time `json:"not_before,omitzero"`
	Expiry            time.Time `json:"expiry,omitzero"`
	NextRotation      time.Time `json:"next_rotation,omitzero"`
	Rotations         uint64    `json:"rotations"`
	LastError         string    `json:"last_error,omitempty"`
	BundleAuthorities int       `json:"bundle_authorities"`
	Ready             bool      `json:"ready"`
}

// generation is one immutable view of the identity: an SVID, the bundles,
// and the channel closed when the next generation replaces it.
type generation struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	changed chan struct{}
}

// state holds the current generation for lock-free readers and the
// bookkeeping shared by both sources.
type state struct {
	source string
	clock  Clock
	cur    atomic.Pointer[generation]

	mu        sync.Mutex // serialises writers and guards the fields below
	next      time.Time
	lastErr   string
	rotations uint64

	expiry   prometheus.Gauge
	rotated  prometheus.Counter
	failures prometheus.Counter
}

func newState(source string, clk Clock, reg prometheus.Registerer) (*state, error) {
	s := &state{
		source: source,
		clock:  clk,
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_svid_expiry_timestamp_seconds",
			Help: "Expiry (NotAfter) of the agent's current X.509-SVID, as a Unix timestamp.",
		}),
		rotated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_svid_rotations_total",
			Help: "Times the agent's X.509-SVID was replaced by a new one after the first.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_svid_rotation_errors_total",
			Help: "Failed attempts to obtain or renew the agent's X.509-SVID.",
		}),
	}
	s.cur.Store(&generation{changed: make(chan struct{})})
	if reg != nil {
		for _, c := range []prometheus.Collector{s.expiry, s.rotated, s.failures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register identity metrics: %w", err)
			}
		}
	}
	return s, nil
}

// install swaps in a new generation and wakes every Changed waiter.
// rotation says whether it replaces a previous SVID (counted) or is the first.
func (s *state) install(svid *x509svid.SVID, bundles *x509bundle.Set, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if svid == nil {
		svid = old.svid
	}
	if bundles == nil {
		bundles = old.bundles
	}
	if old.svid != nil && svid != old.svid {
		s.rotations++
		s.rotated.Inc()
	}
	s.next = next
	s.lastErr = ""
	if svid != nil {
		s.expiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	}
	s.cur.Store(&generation{svid: svid, bundles: bundles, changed: make(chan struct{})})
	close(old.changed)
}

// fail records a failed attempt and when the next one is due.
func (s *state) fail(err error, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err.Error()
	s.next = next
	s.failures.Inc()
}

func (s *state) getX509SVID() (*x509svid.SVID, error) {
	g := s.cur.Load()
	if g.svid == nil {
		return nil, ErrNoSVID
	}
	return g.svid, nil
}

func (s *state) getBundle(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	g := s.cur.Load()
	if g.bundles == nil {
		return nil, fmt.Errorf("identity: no bundle for trust domain %q yet", td)
	}
	return g.bundles.GetX509BundleForTrustDomain(td)
}

func (s *state) changed() <-chan struct{} { return s.cur.Load().changed }

// ready is nil while the current SVID is within its validity period.
func (s *state) ready() error {
	g := s.cur.Load()
	if g.svid == nil {
		return ErrNoSVID
	}
	leaf := g.svid.Certificates[0]
	now := s.clock.Now()
	switch {
	case now.After(leaf.NotAfter):
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		if last != "" {
			return fmt.Errorf("identity: SVID %s expired at %s and was not renewed (last error: %s)", g.svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339), last)
		}
		return fmt.Errorf("identity: SVID %s expired at %s and was not renewed", g.svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("identity: SVID %s is not valid before %s (check the clock)", g.svid.ID, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func (s *state) status() Status {
	g := s.cur.Load()
	s.mu.Lock()
	st := Status{Source: s.source, NextRotation: s.next, Rotations: s.rotations, LastError: s.lastErr}
	s.mu.Unlock()
	if g.svid != nil && g.bundles != nil {
		leaf := g.svid.Certificates[0]
		st.SPIFFEID = g.svid.ID.String()
		st.NotBefore = leaf.NotBefore.UTC()
		st.Expiry = leaf.NotAfter.UTC()
		if b, err := g.bundles.GetX509BundleForTrustDomain(g.svid.ID.TrustDomain()); err == nil {
			st.BundleAuthorities = len(b.X509Authorities())
		}
	}
	if !st.NextRotation.IsZero() {
		st.NextRotation = st.NextRotation.UTC()
	}
	st.Ready = s.ready() == nil
	return st
}
