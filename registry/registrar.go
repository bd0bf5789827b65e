package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/logkey"
)

// RegistrarConfig configures NewRegistrar.
type RegistrarConfig struct {
	// Client talks to the CA (required).
	Client *Client
	// Registration is this agent's entry (SPIFFEID must be the agent's own).
	Registration Registration
	// RenewEvery is the renewal period (DefaultRenewEvery if 0); keep it
	// well under the TTL.
	RenewEvery time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after a failure
	// (500ms and 30s if 0).
	MinBackoff, MaxBackoff time.Duration
	// Logger (slog.Default() if nil).
	Logger *slog.Logger
}

// Registrar keeps this agent's entry registered: Run registers it, renews
// it and re-registers it when the registry lost it; Deregister deletes it on
// shutdown.
type Registrar struct {
	cfg RegistrarConfig
	key Key

	mu      sync.Mutex
	stopped bool
	entry   *Entry
	cancel  context.CancelFunc // of the running Run
	done    chan struct{}      // closed when that Run returns
}

// ErrRefused wraps a registration the registry will never accept as is
// (400 or 403): a configuration problem, not an outage.
var ErrRefused = errors.New("registration refused")

// NewRegistrar checks the registration and returns a registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if cfg.Client == nil {
		return nil, errors.New("registrar: no client")
	}
	e := cfg.Registration.Entry()
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = DefaultRenewEvery
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Registrar{cfg: cfg, key: e.Key()}, nil
}

// Key is the registered entry's key.
func (r *Registrar) Key() Key { return r.key }

// Entry returns the entry as last acknowledged by the registry.
func (r *Registrar) Entry() (Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entry == nil {
		return Entry{}, false
	}
	return r.entry.Clone(), true
}

// Run registers the entry (call it once the inbound listener is ready),
// then renews it every RenewEvery until ctx ends or Deregister is called.
// Outages and conflicts are retried with backoff; it returns an error
// wrapping ErrRefused only when the registry refuses the entry itself.
func (r *Registrar) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped || r.cancel != nil {
		r.mu.Unlock()
		return errors.New("registrar: Run called after Deregister or twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.cancel, r.done = cancel, done
	r.mu.Unlock()
	defer close(done)
	defer cancel()
	failures := 0
	registered := false
	for {
		if r.isStopped() {
			return nil
		}
		var err error
		if !registered {
			var e Entry
			e, err = r.cfg.Client.Register(ctx, r.cfg.Registration)
			if err == nil {
				registered = true
				r.setEntry(&e)
				r.cfg.Logger.Info("registered in the registry", logkey.Service, e.Service, logkey.Addr, e.Address, logkey.Revision, e.Revision)
			}
		} else {
			var e Entry
			e, err = r.cfg.Client.Renew(ctx, r.key)
			if err == nil {
				r.setEntry(&e)
			} else if errors.Is(err, ErrNotFound) {
				r.cfg.Logger.Warn("registry lost our entry; registering again", logkey.Service, r.key.Service, logkey.Addr, r.key.Address)
				registered = false
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.RenewEvery
		if err != nil {
			var apiErr *APIError
			if errors.As(err, &apiErr) && (apiErr.Status == http.StatusBadRequest || apiErr.Status == http.StatusForbidden) {
				return fmt.Errorf("registrar: %w: %w", ErrRefused, err)
			}
			failures++
			wait = backoff(r.cfg.MinBackoff, r.cfg.MaxBackoff, failures)
			r.cfg.Logger.Warn("registry call failed; retrying", logkey.Error, err.Error(), logkey.Attempt, failures, logkey.Backoff, wait.String())
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Deregister stops renewals and deletes the entry, so peers stop routing
// here before the agent drains. An entry already gone is not an error.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	r.entry = nil
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if cancel != nil {
		// An in-flight register must not land after our delete.
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("deregister %s: %w", r.key, ctx.Err())
		}
	}
	if err := r.cfg.Client.Deregister(ctx, r.key); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

func (r *Registrar) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

func (r *Registrar) setEntry(e *Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.entry = e
	}
}

// backoff is an exponential delay with jitter in [d/2, d].
func backoff(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}
