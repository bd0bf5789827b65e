package testca

import (
	"errors"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is an in-memory identity source a test rotates: it satisfies
// go-spiffe's x509svid.Source and x509bundle.Source and has the
// Changed() broadcast meshguard's sources have (a channel closed at the next
// change).
type Source struct {
	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	changed chan struct{}
}

// NewSource returns a source serving svid and bundle.
func NewSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *Source {
	return &Source{svid: svid, bundle: bundle, changed: make(chan struct{})}
}

// GetX509SVID returns the current SVID.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the bundle, or an error for another
// trust domain.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if td != s.bundle.TrustDomain() {
		return nil, errors.New("no bundle for " + td.String())
	}
	return s.bundle, nil
}

// Changed returns a channel closed at the next Set.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Set replaces the SVID and/or the bundle (nil keeps the current one) and
// wakes every Changed waiter.
func (s *Source) Set(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svid != nil {
		s.svid = svid
	}
	if bundle != nil {
		s.bundle = bundle
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Current is the SVID served now.
func (s *Source) Current() *x509svid.SVID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid
}
