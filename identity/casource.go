package identity

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/clock"
	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrNeedToken means the agent holds no usable SVID and was given no join
// token: the operator must mint one (`meshguard token create`).
var ErrNeedToken = errors.New("no valid persisted SVID and no join token")

// Defaults for CAConfig's zero values.
const (
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultBundleRefresh = 5 * time.Minute
	DefaultCATimeout     = 30 * time.Second
)

// CAConfig configures a CASource. URL, Fingerprint and Service are required.
type CAConfig struct {
	URL         string        // the CA, https://host:port (--ca)
	Fingerprint string        // SHA-256 of the CA's root (--ca-fingerprint)
	Token       string        // join token; used only when no valid SVID is persisted
	Service     string        // the SVID's ID is spiffe://<root's trust domain>/svc/<Service>
	DataDir     string        // where the SVID, key and bundle persist; "" keeps them in memory
	TTL         time.Duration // SVID lifetime asked for at bootstrap; 0 leaves it to the CA

	Clock         Clock                 // default: the system clock
	Rand          func() float64        // in [0,1), draws the rotation jitter; default math/rand
	Logger        *slog.Logger          // default: discard
	Registerer    prometheus.Registerer // metrics; nil registers none
	MinBackoff    time.Duration         // first retry delay after a failed renewal
	MaxBackoff    time.Duration         // retry delay cap
	BundleRefresh time.Duration         // how often /roots.pem is fetched again
	Timeout       time.Duration         // per CA request
}

// CASource is the agent's identity from the meshguard CA: it bootstraps
// with a join token (or a persisted SVID), renews over mTLS at half of the
// SVID's lifetime, and refreshes the trust bundle. It satisfies go-spiffe's
// x509svid.Source and x509bundle.Source.
type CASource struct {
	cfg         CAConfig
	fingerprint string
	log         *slog.Logger
	st          *state

	// Set by Bootstrap, read-only afterwards.
	mu     sync.Mutex
	id     spiffeid.ID
	root   *x509.Certificate
	client *caClient
}

// NewCASource checks cfg and returns a source holding no SVID yet; call
// Bootstrap, then Run.
func NewCASource(cfg CAConfig) (*CASource, error) {
	if _, err := parseCAURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	fp, err := ParseFingerprint(cfg.Fingerprint)
	if err != nil {
		return nil, fmt.Errorf("identity: CA %w", err)
	}
	if err := spiffeid.ValidatePathSegment(cfg.Service); err != nil || cfg.Service == "" {
		return nil, fmt.Errorf("identity: service name %q is not a valid SPIFFE ID path segment (letters, digits, '.', '-', '_')", cfg.Service)
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("identity: negative SVID TTL %s", cfg.TTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.BundleRefresh <= 0 {
		cfg.BundleRefresh = DefaultBundleRefresh
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCATimeout
	}
	st, err := newState("ca", cfg.Clock, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &CASource{cfg: cfg, fingerprint: fp, log: cfg.Logger.With(logkey.Component, "identity"), st: st}, nil
}

// GetX509SVID returns the current SVID. It implements x509svid.Source.
func (s *CASource) GetX509SVID() (*x509svid.SVID, error) { return s.st.getX509SVID() }

// GetX509BundleForTrustDomain returns the trust bundle. It implements
// x509bundle.Source.
func (s *CASource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.st.getBundle(td)
}

// Changed returns a channel closed at the next change of the SVID or the
// bundle. Take the channel before reading the SVID, then wait on it.
func (s *CASource) Changed() <-chan struct{} { return s.st.changed() }

// Ready is nil while the current SVID is valid.
func (s *CASource) Ready() error { return s.st.ready() }

// Status is a snapshot for /status.
func (s *CASource) Status() Status { return s.st.status() }

// Bootstrap obtains the first SVID: the persisted one if it is still valid,
// otherwise a new one with the join token. It pins the CA's root by
// fingerprint first. Transient failures (CA unreachable, 5xx) are retried
// with backoff until ctx ends; a refused token or a wrong root is returned.
func (s *CASource) Bootstrap(ctx context.Context) error {
	base, _ := parseCAURL(s.cfg.URL)
	if s.cfg.Token == "" && !s.hasPersistedSVID() {
		return fmt.Errorf("identity: %w: mint one with `meshguard token create` and pass --token or --token-file", ErrNeedToken)
	}
	if s.cfg.DataDir != "" {
		if err := ensureDataDir(s.cfg.DataDir); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	roots := s.persistedRoots()
	if roots == nil {
		var root *x509.Certificate
		err := s.retry(ctx, "pin CA root", func() error {
			var err error
			root, err = fetchPinnedRoot(ctx, base, s.fingerprint, s.cfg.Timeout)
			return err
		})
		if err != nil {
			return fmt.Errorf("identity: %w", err)
		}
		roots = []*x509.Certificate{root}
	}
	var root *x509.Certificate
	for _, r := range roots {
		if Fingerprint(r) == s.fingerprint {
			root = r
		}
	}
	td, err := trustDomainOf(root)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	id, err := spiffeid.FromSegments(td, "svc", s.cfg.Service)
	if err != nil {
		return fmt.Errorf("identity: SPIFFE ID for service %q: %w", s.cfg.Service, err)
	}
	s.mu.Lock()
	s.id, s.root = id, root
	s.client = newCAClient(base, root, s.cfg.Clock, s.cfg.Timeout, s.tlsCertificate)
	s.mu.Unlock()
	bundles := x509bundle.NewSet(x509bundle.FromX509Authorities(td, roots))
	if s.cfg.DataDir != "" {
		if err := saveBundle(s.cfg.DataDir, roots); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}

	if svid, err := s.persistedSVID(bundles); err == nil {
		s.installSVID(svid, bundles)
		s.log.Info("using persisted SVID", logkey.SPIFFEID, svid.ID.String(), logkey.Expiry, svid.Certificates[0].NotAfter)
		return nil
	} else if !errors.Is(err, errNotPersisted) {
		if s.cfg.Token == "" {
			return fmt.Errorf("identity: %w: %w: mint a token with `meshguard token create --spiffe-id %s` and pass --token or --token-file", ErrNeedToken, err, id)
		}
		s.log.Warn("persisted SVID unusable, bootstrapping with the join token", logkey.Error, err.Error())
	}
	if s.cfg.Token == "" {
		return fmt.Errorf("identity: %w: mint one with `meshguard token create --spiffe-id %s` and pass --token or --token-file", ErrNeedToken, id)
	}

	var svid *x509svid.SVID
	err = s.retry(ctx, "bootstrap SVID", func() error {
		key, csr, err := newKeyAndCSR(id)
		if err != nil {
			return &permanentError{err}
		}
		resp, err := s.client.sign(ctx, csr, s.cfg.Token, s.cfg.TTL)
		if err != nil {
			return err
		}
		svid, err = s.accept(resp, key, bundles)
		if err != nil {
			return &permanentError{fmt.Errorf("bootstrap SVID: %w", err)}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	s.persist(svid)
	s.installSVID(svid, bundles)
	s.log.Info("obtained SVID with join token", logkey.SPIFFEID, svid.ID.String(), logkey.Expiry, svid.Certificates[0].NotAfter)
	return nil
}

// Run renews the SVID at its rotation time (retrying with capped
// exponential backoff on failure, while the current SVID keeps being
// served) and refreshes the bundle, until ctx ends.
func (s *CASource) Run(ctx context.Context) error {
	s.mu.Lock()
	client := s.client
	s.mu.Unlock()
	if client == nil {
		return errors.New("identity: Run called before a successful Bootstrap")
	}
	clk := s.cfg.Clock
	attempt := 0
	s.st.mu.Lock()
	nextRotate := s.st.next
	s.st.mu.Unlock()
	nextBundle := clk.Now().Add(s.cfg.BundleRefresh)
	for {
		wake := nextRotate
		if nextBundle.Before(wake) {
			wake = nextBundle
		}
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(wake.Sub(clk.Now())):
		}
		now := clk.Now()
		if !now.Before(nextRotate) {
			next, err := s.rotate(ctx)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				wait := Backoff(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff)
				attempt++
				nextRotate = now.Add(wait)
				s.st.fail(err, nextRotate)
				s.log.Warn("SVID renewal failed; serving the current SVID and retrying", logkey.Error, err.Error(), logkey.Attempt, attempt, logkey.Backoff, wait.String())
			default:
				attempt = 0
				nextRotate = next
			}
		}
		if !now.Before(nextBundle) {
			if err := s.refreshBundle(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("trust bundle refresh failed; keeping the current bundle", logkey.Error, err.Error())
			}
			nextBundle = now.Add(s.cfg.BundleRefresh)
		}
	}
}

// rotate rekeys over mTLS and installs the new SVID; it returns the next
// rotation time.
func (s *CASource) rotate(ctx context.Context) (time.Time, error) {
	key, csr, err := newKeyAndCSR(s.id)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := s.client.rekey(ctx, csr)
	if err != nil {
		return time.Time{}, err
	}
	bundles := s.st.cur.Load().bundles
	svid, err := s.accept(resp, key, bundles)
	if err != nil {
		return time.Time{}, fmt.Errorf("renew SVID: %w", err)
	}
	s.persist(svid)
	next := s.installSVID(svid, nil)
	s.log.Info("SVID renewed", logkey.SPIFFEID, svid.ID.String(), logkey.Expiry, svid.Certificates[0].NotAfter, logkey.NextRotate, next)
	return next, nil
}

// refreshBundle replaces the bundle with the CA's current roots, which
// must still include the pinned root.
func (s *CASource) refreshBundle(ctx context.Context) error {
	roots, err := s.client.roots(ctx)
	if err != nil {
		return err
	}
	pinned := false
	for _, r := range roots {
		pinned = pinned || Fingerprint(r) == s.fingerprint
	}
	if !pinned {
		return fmt.Errorf("fetch CA roots: the CA's roots no longer include the pinned root %s", s.fingerprint)
	}
	td := s.id.TrustDomain()
	cur, err := s.st.getBundle(td)
	nb := x509bundle.FromX509Authorities(td, roots)
	if err == nil && cur.Equal(nb) {
		return nil
	}
	if s.cfg.DataDir != "" {
		if err := saveBundle(s.cfg.DataDir, roots); err != nil {
			s.log.Error("persisting the trust bundle failed", logkey.Error, err.Error())
		}
	}
	s.st.mu.Lock()
	next := s.st.next
	s.st.mu.Unlock()
	s.st.install(nil, x509bundle.NewSet(nb), next)
	s.log.Info("trust bundle updated", "authorities", len(roots))
	return nil
}

// accept checks a CA answer: the leaf is for our key, passes the strict
// SVID rules, carries the ID we asked for, and chains to the bundle now.
func (s *CASource) accept(resp *signResponse, key crypto.Signer, bundles *x509bundle.Set) (*x509svid.SVID, error) {
	leafs, err := parsePEMCerts([]byte(resp.Crt))
	if err != nil || len(leafs) != 1 {
		return nil, errors.New("CA response: want exactly one certificate in \"crt\"")
	}
	leaf := leafs[0]
	chain := []*x509.Certificate{leaf}
	if len(resp.CertChain) > 0 {
		for i, p := range resp.CertChain {
			cs, err := parsePEMCerts([]byte(p))
			if err != nil || len(cs) != 1 {
				return nil, fmt.Errorf("CA response: certChain[%d] is not one PEM certificate", i)
			}
			if i == 0 {
				if !cs[0].Equal(leaf) {
					return nil, errors.New("CA response: certChain does not start with crt")
				}
				continue
			}
			chain = append(chain, cs[0])
		}
	} else if resp.CA != "" {
		cs, err := parsePEMCerts([]byte(resp.CA))
		if err != nil {
			return nil, fmt.Errorf("CA response: \"ca\": %w", err)
		}
		chain = append(chain, cs...)
	}
	if !samePublicKey(leaf, key) {
		return nil, errors.New("CA response: the certificate is not for the key this agent generated")
	}
	svid := &x509svid.SVID{Certificates: chain, PrivateKey: key}
	if svid.ID, err = s.check(svid, bundles); err != nil {
		return nil, fmt.Errorf("CA response: %w", err)
	}
	return svid, nil
}

// check applies the strict SVID rules, the expected ID and chain
// verification at the clock's now.
func (s *CASource) check(svid *x509svid.SVID, bundles *x509bundle.Set) (spiffeid.ID, error) {
	id, err := svidcheck.Leaf(svid.Certificates[0])
	if err != nil {
		return spiffeid.ID{}, err
	}
	if id != s.id {
		return spiffeid.ID{}, fmt.Errorf("SVID is for %s, want %s", id, s.id)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundles, x509svid.WithTime(s.cfg.Clock.Now())); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// persistedRoots returns the persisted bundle if it holds the pinned root,
// so a restart needs no unverified fetch (and works while the CA is down).
func (s *CASource) persistedRoots() []*x509.Certificate {
	if s.cfg.DataDir == "" {
		return nil
	}
	roots, err := loadBundle(s.cfg.DataDir)
	if err != nil {
		if !errors.Is(err, errNotPersisted) {
			s.log.Warn("persisted bundle unusable; fetching the root again", logkey.Error, err.Error())
		}
		return nil
	}
	for _, r := range roots {
		if Fingerprint(r) == s.fingerprint && checkRoot(r) == nil {
			return roots
		}
	}
	s.log.Warn("persisted bundle does not hold the pinned root; fetching it again")
	return nil
}

// hasPersistedSVID reports whether the data directory holds an SVID file.
func (s *CASource) hasPersistedSVID() bool {
	if s.cfg.DataDir == "" {
		return false
	}
	_, err := os.Lstat(filepath.Join(s.cfg.DataDir, svidFile))
	return err == nil
}

// persistedSVID loads the persisted SVID and checks it like a fresh one.
func (s *CASource) persistedSVID(bundles *x509bundle.Set) (*x509svid.SVID, error) {
	if s.cfg.DataDir == "" {
		return nil, errNotPersisted
	}
	svid, err := loadSVID(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if _, err := s.check(svid, bundles); err != nil {
		return nil, fmt.Errorf("persisted SVID: %w", err)
	}
	return svid, nil
}

// persist writes the SVID to the data directory; a failure is logged, not
// fatal: the SVID in memory is good, and the old file is still intact.
func (s *CASource) persist(svid *x509svid.SVID) {
	if s.cfg.DataDir == "" {
		return
	}
	if err := saveSVID(s.cfg.DataDir, svid); err != nil {
		s.log.Error("persisting the SVID failed; a restart will need the previous SVID or a new token", logkey.Error, err.Error())
	}
}

// installSVID publishes svid with its rotation time (drawn with jitter).
func (s *CASource) installSVID(svid *x509svid.SVID, bundles *x509bundle.Set) time.Time {
	next := NextRotation(s.cfg.Clock.Now(), svid.Certificates[0], 2*s.cfg.Rand()-1)
	s.st.install(svid, bundles, next)
	return next
}

// tlsCertificate is the current SVID as a client certificate for rekey.
func (s *CASource) tlsCertificate() *tls.Certificate {
	g := s.st.cur.Load()
	if g.svid == nil {
		return nil
	}
	c := &tls.Certificate{PrivateKey: g.svid.PrivateKey, Leaf: g.svid.Certificates[0]}
	for _, cert := range g.svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// retry runs f until it succeeds, fails permanently, or ctx ends, waiting
// with capped exponential backoff on the source's clock between attempts.
func (s *CASource) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || isPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		wait := Backoff(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff)
		s.st.fail(err, s.cfg.Clock.Now().Add(wait))
		s.log.Warn(what+" failed; retrying", logkey.Error, err.Error(), logkey.Attempt, attempt+1, logkey.Backoff, wait.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-s.cfg.Clock.After(wait):
		}
	}
}

// trustDomainOf reads the trust domain from the root's spiffe:// URI SAN.
func trustDomainOf(root *x509.Certificate) (spiffeid.TrustDomain, error) {
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" {
			td, err := spiffeid.TrustDomainFromURI(u)
			if err != nil {
				return spiffeid.TrustDomain{}, fmt.Errorf("CA root URI SAN %q: %w", u, err)
			}
			return td, nil
		}
	}
	return spiffeid.TrustDomain{}, errors.New("the CA root carries no spiffe:// URI SAN naming the trust domain")
}
