package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/prometheus/client_golang/prometheus"
)

// SnapshotFile is the name of the persisted table in WatcherConfig.DataDir.
const SnapshotFile = "registry-snapshot.json"

// DefaultPersistEvery is the least time between two writes of the snapshot file.
const DefaultPersistEvery = time.Second

// WatcherConfig configures NewWatcher.
type WatcherConfig struct {
	// Client talks to the CA (required).
	Client *Client
	// DataDir, if set, holds SnapshotFile: loaded at start, rewritten
	// (0600, atomic rename) after changes.
	DataDir string
	// Registerer receives the watcher's metrics (none if nil).
	Registerer prometheus.Registerer
	// Logger (slog.Default() if nil).
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay (500ms, 30s if 0).
	MinBackoff, MaxBackoff time.Duration
	// PersistEvery: see DefaultPersistEvery.
	PersistEvery time.Duration
	// Now is the clock for the snapshot age (time.Now if nil).
	Now func() time.Time
	// OnChange, if set, is called after every table swap, from the watch
	// goroutine; it must return quickly.
	OnChange func(*Table)
}

// Watcher follows the registry and holds the current Table. While the CA
// is unreachable it keeps serving the last table; with a DataDir the table
// survives restarts, so an agent restarted during an outage still routes.
type Watcher struct {
	cfg      WatcherConfig
	table    atomic.Pointer[Table]
	lastSync atomic.Int64 // unix nanoseconds of the last sign of life from the registry
	dirty    chan struct{}

	revision   prometheus.Gauge
	reconnects prometheus.Counter
}

type persisted struct {
	Revision int64     `json:"revision"`
	Store    string    `json:"store,omitempty"`
	SavedAt  time.Time `json:"saved_at"`
	Synced   time.Time `json:"synced"`
	Entries  []Entry   `json:"entries"`
}

// NewWatcher returns a watcher holding the persisted table, if any. A
// persisted file that cannot be read or holds an invalid entry is ignored
// (logged): the watcher starts empty and fetches a snapshot.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("registry watcher: no client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.PersistEvery <= 0 {
		cfg.PersistEvery = DefaultPersistEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Watcher{
		cfg:   cfg,
		dirty: make(chan struct{}, 1),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_registry_revision",
			Help: "Registry revision of the agent's current route table.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_registry_watch_reconnects_total",
			Help: "Times the registry watch stream was re-established after it broke.",
		}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshguard_registry_snapshot_age_seconds",
		Help: "Seconds since the registry last confirmed the agent's route table (grows while the CA is unreachable).",
	}, func() float64 {
		last := w.lastSync.Load()
		if last == 0 {
			return 0
		}
		return w.cfg.Now().Sub(time.Unix(0, last)).Seconds()
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.revision, w.reconnects, age} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registry watcher: register metrics: %w", err)
			}
		}
	}
	w.table.Store(NewTable(0, nil))
	if cfg.DataDir != "" {
		if p, err := loadSnapshot(filepath.Join(cfg.DataDir, SnapshotFile)); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				cfg.Logger.Warn("ignoring persisted registry snapshot", logkey.Error, err.Error())
			}
		} else {
			t := NewTable(p.Revision, p.Entries)
			t.store = p.Store
			w.table.Store(t)
			w.revision.Set(float64(p.Revision))
			if !p.Synced.IsZero() {
				w.lastSync.Store(p.Synced.UnixNano())
			}
			cfg.Logger.Info("loaded persisted registry snapshot", logkey.Revision, p.Revision, "entries", len(p.Entries))
		}
	}
	return w, nil
}

// Table returns the current table (never nil).
func (w *Watcher) Table() *Table { return w.table.Load() }

// Run watches the registry until ctx ends, reconnecting with backoff and
// resuming from the table's revision. It returns nil when ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	persistDone := make(chan struct{})
	if w.cfg.DataDir != "" {
		go func() {
			defer close(persistDone)
			w.persistLoop(ctx)
		}()
	} else {
		close(persistDone)
	}
	defer func() { <-persistDone }()
	failures := 0
	for {
		progressed := false
		cur := w.Table()
		err := w.cfg.Client.WatchStore(ctx, cur.Store(), cur.Revision(), func(ev Event) error {
			w.lastSync.Store(w.cfg.Now().UnixNano())
			if ev.Type == EventHeartbeat {
				return nil
			}
			progressed = true
			return w.apply(ev)
		})
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			failures = 0
		}
		failures++
		wait := backoff(w.cfg.MinBackoff, w.cfg.MaxBackoff, failures)
		w.cfg.Logger.Warn("registry watch broke; serving the last table and reconnecting",
			logkey.Error, fmt.Sprint(err), logkey.Revision, w.Table().Revision(), logkey.Backoff, wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		w.reconnects.Inc()
	}
}

func (w *Watcher) apply(ev Event) error {
	cur := w.Table()
	var next *Table
	switch ev.Type {
	case EventSnapshot:
		valid := make([]Entry, 0, len(ev.Entries))
		for _, e := range ev.Entries {
			if err := e.Validate(); err != nil {
				w.cfg.Logger.Warn("registry sent an invalid entry; ignoring it", logkey.Revision, ev.Revision, logkey.Error, err.Error())
				continue
			}
			valid = append(valid, e)
		}
		next = NewTable(ev.Revision, valid)
		next.store = ev.Store
	case EventPut, EventDelete:
		if ev.Revision <= cur.Revision() {
			return nil // already applied (a resumed stream may repeat)
		}
		if ev.Type == EventPut {
			if err := ev.Entry.Validate(); err != nil {
				// Drop what we had under that key rather than route on stale data.
				w.cfg.Logger.Warn("registry sent an invalid entry; ignoring it", logkey.Revision, ev.Revision, logkey.Error, err.Error())
				ev = Event{Type: EventDelete, Revision: ev.Revision, Entry: &Entry{Service: ev.Entry.Service, Address: ev.Entry.Address}}
			}
		}
		next = cur.apply(ev)
	default:
		return nil
	}
	w.table.Store(next)
	w.revision.Set(float64(next.Revision()))
	if w.cfg.OnChange != nil {
		w.cfg.OnChange(next)
	}
	select {
	case w.dirty <- struct{}{}:
	default:
	}
	return nil
}

// persistLoop writes the table after changes, at most every PersistEvery,
// and once more when ctx ends.
func (w *Watcher) persistLoop(ctx context.Context) {
	var written int64 = -1
	save := func() {
		t := w.Table()
		if t.Revision() == written {
			return
		}
		if err := w.save(t); err != nil {
			w.cfg.Logger.Error("persisting registry snapshot failed", logkey.Error, err.Error())
			return
		}
		written = t.Revision()
	}
	if w.Table().Revision() > 0 {
		written = w.Table().Revision() // loaded from this very file
	}
	for {
		select {
		case <-ctx.Done():
			save()
			return
		case <-w.dirty:
		}
		save()
		t := time.NewTimer(w.cfg.PersistEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			save()
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) save(t *Table) error {
	entries := t.Entries()
	if entries == nil {
		entries = []Entry{}
	}
	p := persisted{Revision: t.Revision(), Store: t.Store(), SavedAt: w.cfg.Now(), Entries: entries}
	if last := w.lastSync.Load(); last != 0 {
		p.Synced = time.Unix(0, last).UTC()
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(w.cfg.DataDir, SnapshotFile), b)
}

// writeFileAtomic writes a 0600 file by fsynced temp file and rename.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func loadSnapshot(path string) (persisted, error) {
	var p persisted
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("read %s: %w", path, err)
	}
	for i := range p.Entries {
		if err := p.Entries[i].Validate(); err != nil {
			return persisted{}, fmt.Errorf("read %s: entry %d: %w", path, i, err)
		}
	}
	return p, nil
}
