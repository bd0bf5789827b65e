package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadAPIConfig configures a WorkloadAPISource.
type WorkloadAPIConfig struct {
	Addr       string                // the Workload API, e.g. unix:///run/spire/agent.sock (--spiffe-socket)
	Clock      Clock                 // default: the system clock
	Logger     *slog.Logger          // default: discard
	Registerer prometheus.Registerer // metrics; nil registers none
}

// WorkloadAPISource takes the agent's SVID and bundles from an existing
// SPIFFE Workload API (a SPIRE agent, another meshguard agent) through
// go-spiffe's workloadapi.X509Source, and gives them the same Changed,
// Ready and Status surface as CASource. Every SVID it receives must pass
// the strict SVID check; one that fails is refused and the previous kept.
type WorkloadAPISource struct {
	cfg WorkloadAPIConfig
	log *slog.Logger
	st  *state

	mu    sync.Mutex
	inner *workloadapi.X509Source
}

// NewWorkloadAPISource checks cfg; call Bootstrap, then Run.
func NewWorkloadAPISource(cfg WorkloadAPIConfig) (*WorkloadAPISource, error) {
	if err := workloadapi.ValidateAddress(cfg.Addr); err != nil {
		return nil, fmt.Errorf("identity: Workload API address %q: %w", cfg.Addr, err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := newState("spiffe-workload-api", cfg.Clock, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &WorkloadAPISource{cfg: cfg, log: cfg.Logger.With(logkey.Component, "identity"), st: st}, nil
}

// GetX509SVID returns the current SVID. It implements x509svid.Source.
func (s *WorkloadAPISource) GetX509SVID() (*x509svid.SVID, error) { return s.st.getX509SVID() }

// GetX509BundleForTrustDomain implements x509bundle.Source: the own trust
// domain's bundle as last published (with Changed), federated ones live.
func (s *WorkloadAPISource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.st.getBundle(td)
	if err == nil {
		return b, nil
	}
	s.mu.Lock()
	inner := s.inner
	s.mu.Unlock()
	if inner == nil {
		return nil, err
	}
	return inner.GetX509BundleForTrustDomain(td) // federated trust domains
}

// Changed returns a channel closed at the next change of the SVID or the
// bundles. Take the channel before reading the SVID, then wait on it.
func (s *WorkloadAPISource) Changed() <-chan struct{} { return s.st.changed() }

// Ready is nil while the current SVID is valid.
func (s *WorkloadAPISource) Ready() error { return s.st.ready() }

// Status is a snapshot for /status. NextRotation is unknown here: the
// Workload API's server rotates.
func (s *WorkloadAPISource) Status() Status { return s.st.status() }

// Bootstrap connects and blocks until the Workload API has sent an SVID
// that passes the strict check, or ctx ends.
func (s *WorkloadAPISource) Bootstrap(ctx context.Context) error {
	s.log.Info("waiting for an SVID from the Workload API", logkey.Addr, s.cfg.Addr)
	inner, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(s.cfg.Addr)))
	if err != nil {
		return fmt.Errorf("identity: connect to Workload API %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.inner = inner
	s.mu.Unlock()
	for {
		err := s.take(inner)
		if err == nil {
			return nil
		}
		s.log.Warn("Workload API sent an SVID meshguard refuses; waiting for another", logkey.Error, err.Error())
		select {
		case <-ctx.Done():
			inner.Close()
			return fmt.Errorf("identity: Workload API %s: %w (last error: %v)", s.cfg.Addr, ctx.Err(), err)
		case <-inner.Updated():
		}
	}
}

// Run follows the Workload API's updates until ctx ends, then closes the
// connection.
func (s *WorkloadAPISource) Run(ctx context.Context) error {
	s.mu.Lock()
	inner := s.inner
	s.mu.Unlock()
	if inner == nil {
		return errors.New("identity: Run called before a successful Bootstrap")
	}
	defer inner.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-inner.Updated():
			if err := s.take(inner); err != nil {
				s.st.fail(err, time.Time{})
				s.log.Warn("Workload API sent an SVID meshguard refuses; keeping the previous one", logkey.Error, err.Error())
			}
		}
	}
}

// take checks the inner source's current SVID and publishes it with the
// bundles.
func (s *WorkloadAPISource) take(inner *workloadapi.X509Source) error {
	svid, err := inner.GetX509SVID()
	if err != nil {
		return err
	}
	if _, err := svidcheck.Leaf(svid.Certificates[0]); err != nil {
		return err
	}
	if _, _, err := x509svid.Verify(svid.Certificates, inner, x509svid.WithTime(s.cfg.Clock.Now())); err != nil {
		return err
	}
	bundle, err := inner.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return err
	}
	cur := s.st.cur.Load()
	if cur.svid != nil && cur.svid.Certificates[0].Equal(svid.Certificates[0]) {
		if b, err := s.st.getBundle(svid.ID.TrustDomain()); err == nil && b.Equal(bundle) {
			return nil
		}
		svid = cur.svid // a bundle-only change is not a rotation
	}
	s.st.install(svid, x509bundle.NewSet(bundle.Clone()), time.Time{})
	s.log.Info("identity update from the Workload API", logkey.SPIFFEID, svid.ID.String(), logkey.Expiry, svid.Certificates[0].NotAfter)
	return nil
}
