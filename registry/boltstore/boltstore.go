package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/meshguard/meshguard/registry"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketEntries = []byte("entries")
	bucketClaims  = []byte("claims")
	bucketMeta    = []byte("meta")
	keyRevision   = []byte("revision")
	keyID         = []byte("id")
)

// Defaults of Options.
const (
	DefaultSweepEvery = time.Second
	DefaultHistory    = 4096
	defaultSubBuffer  = 1024
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Now is the clock that drives lease expiry (time.Now if nil).
	Now func() time.Time
	// SweepEvery is how often Run expires leases (DefaultSweepEvery if 0).
	SweepEvery time.Duration
	// History is how many recent changes are kept in memory so a watcher
	// can resume without a new snapshot (DefaultHistory if 0).
	History int
	// WatchBuffer is how many changes a watcher may lag behind before its
	// watch ends with registry.ErrWatchTooSlow (1024 if 0).
	WatchBuffer int
}

// Store is the embedded registry store: one bbolt file, fsynced on every
// commit. Writes are serialized; watchers are fed from memory.
type Store struct {
	db   *bolt.DB
	opts Options

	id      string
	mu      sync.Mutex
	rev     int64
	expiry  map[registry.Key]time.Time
	history []registry.Event // the last opts.History changes, oldest first
	subs    map[*subscriber]struct{}
	closed  bool
}

type record struct {
	Entry registry.Entry `json:"entry"`
	TTL   time.Duration  `json:"ttl"`
}

type subscriber struct {
	ch     chan registry.Event
	closed bool
}

// Open opens (creating it 0600 if needed) the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = DefaultSweepEvery
	}
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = defaultSubBuffer
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open registry store %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts, expiry: map[registry.Key]time.Time{}, subs: map[*subscriber]struct{}{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketClaims, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if id := meta.Get(keyID); id != nil {
			s.id = string(id)
		} else {
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			s.id = "bolt-" + hex.EncodeToString(b[:])
			if err := meta.Put(keyID, []byte(s.id)); err != nil {
				return err
			}
		}
		if v := meta.Get(keyRevision); len(v) == 8 {
			s.rev = int64(binary.BigEndian.Uint64(v))
		}
		// Agents could not renew while the CA was down: every lease gets at
		// least its full TTL from now, so a restart does not expire the
		// whole registry at once.
		now := opts.Now()
		entries := tx.Bucket(bucketEntries)
		type fix struct {
			k []byte
			v []byte
		}
		var fixes []fix
		err := entries.ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode entry %q: %w", k, err)
			}
			if floor := now.Add(r.TTL); r.Entry.Expires.Before(floor) {
				r.Entry.Expires = floor
				nv, err := json.Marshal(r)
				if err != nil {
					return err
				}
				fixes = append(fixes, fix{append([]byte(nil), k...), nv})
			}
			s.expiry[r.Entry.Key()] = r.Entry.Expires
			return nil
		})
		if err != nil {
			return err
		}
		for _, f := range fixes {
			if err := entries.Put(f.k, f.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open registry store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file and ends every watch.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	for sub := range s.subs {
		s.dropLocked(sub)
	}
	s.mu.Unlock()
	return s.db.Close()
}

// ID implements registry.Store: a random name made when the file was created.
func (s *Store) ID(context.Context) (string, error) { return s.id, nil }

// Run expires leases every SweepEvery until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.Expire(ctx); err != nil {
				return err
			}
		}
	}
}

func entryKey(k registry.Key) []byte {
	return []byte(k.Service + "\x00" + k.Address)
}

func claimPrefix(route string) []byte { return []byte(route + "\x00") }

func claimKey(route string, k registry.Key) []byte {
	return append(claimPrefix(route), entryKey(k)...)
}

// bumpLocked increments and stores the revision inside tx.
func (s *Store) bumpLocked(tx *bolt.Tx, rev int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return tx.Bucket(bucketMeta).Put(keyRevision, b[:])
}

func getRecord(tx *bolt.Tx, k registry.Key) (*record, error) {
	v := tx.Bucket(bucketEntries).Get(entryKey(k))
	if v == nil {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode entry %s: %w", k, err)
	}
	return &r, nil
}

// Put implements registry.Store.
func (s *Store) Put(ctx context.Context, e registry.Entry, ttl time.Duration) (registry.Entry, error) {
	if err := ctx.Err(); err != nil {
		return registry.Entry{}, err
	}
	e = e.Clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := s.rev + 1
	e.Revision = rev
	e.Expires = s.opts.Now().Add(ttl)
	k := e.Key()
	err := s.db.Update(func(tx *bolt.Tx) error {
		claims := tx.Bucket(bucketClaims)
		for _, r := range e.Routes {
			c := claims.Cursor()
			p := claimPrefix(r)
			for ck, owner := c.Seek(p); ck != nil && bytes.HasPrefix(ck, p); ck, owner = c.Next() {
				if string(owner) != e.SPIFFEID {
					return &registry.ConflictError{Route: r, Owner: string(owner)}
				}
			}
		}
		old, err := getRecord(tx, k)
		if err != nil {
			return err
		}
		if old != nil {
			for _, r := range old.Entry.Routes {
				if err := claims.Delete(claimKey(r, k)); err != nil {
					return err
				}
			}
		}
		for _, r := range e.Routes {
			if err := claims.Put(claimKey(r, k), []byte(e.SPIFFEID)); err != nil {
				return err
			}
		}
		v, err := json.Marshal(record{Entry: e, TTL: ttl})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketEntries).Put(entryKey(k), v); err != nil {
			return err
		}
		return s.bumpLocked(tx, rev)
	})
	if err != nil {
		return registry.Entry{}, fmt.Errorf("put %s: %w", k, err)
	}
	s.rev = rev
	s.expiry[k] = e.Expires
	s.publishLocked(registry.Event{Type: registry.EventPut, Revision: rev, Entry: &e})
	return e.Clone(), nil
}

// Renew implements registry.Store. A renewal changes no revision and sends
// no event: only the lease moves.
func (s *Store) Renew(ctx context.Context, k registry.Key) (registry.Entry, error) {
	if err := ctx.Err(); err != nil {
		return registry.Entry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out registry.Entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, k)
		if err != nil {
			return err
		}
		if r == nil || !r.Entry.Expires.After(s.opts.Now()) {
			return registry.ErrNotFound
		}
		r.Entry.Expires = s.opts.Now().Add(r.TTL)
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		out = r.Entry
		return tx.Bucket(bucketEntries).Put(entryKey(k), v)
	})
	if err != nil {
		return registry.Entry{}, fmt.Errorf("renew %s: %w", k, err)
	}
	s.expiry[k] = out.Expires
	return out, nil
}

// Delete implements registry.Store.
func (s *Store) Delete(ctx context.Context, k registry.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.deleteLocked(k); err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	return nil
}

// deleteLocked removes k in its own transaction and revision.
func (s *Store) deleteLocked(k registry.Key) error {
	rev := s.rev + 1
	var gone registry.Entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, k)
		if err != nil {
			return err
		}
		if r == nil {
			return registry.ErrNotFound
		}
		for _, route := range r.Entry.Routes {
			if err := tx.Bucket(bucketClaims).Delete(claimKey(route, k)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketEntries).Delete(entryKey(k)); err != nil {
			return err
		}
		gone = r.Entry
		return s.bumpLocked(tx, rev)
	})
	if err != nil {
		return err
	}
	s.rev = rev
	delete(s.expiry, k)
	gone.Revision = rev
	s.publishLocked(registry.Event{Type: registry.EventDelete, Revision: rev, Entry: &gone})
	return nil
}

// Expire deletes every entry whose lease has ended by the injected clock
// and returns how many it deleted. Each deletion is one revision.
func (s *Store) Expire(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	var due []registry.Key
	for k, exp := range s.expiry {
		if !exp.After(now) {
			due = append(due, k)
		}
	}
	if len(due) == 0 {
		return 0, nil
	}
	sort.Slice(due, func(i, j int) bool { return due[i].String() < due[j].String() })
	// One transaction (one fsync) for the whole sweep, one revision per entry.
	rev := s.rev
	var gone []registry.Entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range due {
			r, err := getRecord(tx, k)
			if err != nil {
				return err
			}
			if r == nil || r.Entry.Expires.After(now) {
				continue
			}
			for _, route := range r.Entry.Routes {
				if err := tx.Bucket(bucketClaims).Delete(claimKey(route, k)); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketEntries).Delete(entryKey(k)); err != nil {
				return err
			}
			rev++
			e := r.Entry
			e.Revision = rev
			gone = append(gone, e)
		}
		return s.bumpLocked(tx, rev)
	})
	if err != nil {
		return 0, fmt.Errorf("expire leases: %w", err)
	}
	s.rev = rev
	for i := range gone {
		delete(s.expiry, gone[i].Key())
		s.publishLocked(registry.Event{Type: registry.EventDelete, Revision: gone[i].Revision, Entry: &gone[i]})
	}
	return len(gone), nil
}

// Keys implements registry.Store.
func (s *Store) Keys(ctx context.Context, service string) ([]registry.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var keys []registry.Key
	p := []byte(service + "\x00")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			keys = append(keys, registry.Key{Service: service, Address: string(k[len(p):])})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", service, err)
	}
	return keys, nil
}

// List implements registry.Store.
func (s *Store) List(ctx context.Context) (registry.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return registry.Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Store) snapshotLocked() (registry.Snapshot, error) {
	snap := registry.Snapshot{Revision: s.rev, Entries: []registry.Entry{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode entry %q: %w", k, err)
			}
			snap.Entries = append(snap.Entries, r.Entry)
			return nil
		})
	})
	if err != nil {
		return registry.Snapshot{}, fmt.Errorf("list entries: %w", err)
	}
	return snap, nil
}

func (s *Store) publishLocked(ev registry.Event) {
	s.history = append(s.history, ev)
	if len(s.history) > s.opts.History {
		n := copy(s.history, s.history[len(s.history)-s.opts.History:])
		s.history = s.history[:n]
	}
	for sub := range s.subs {
		select {
		case sub.ch <- ev:
		default:
			s.dropLocked(sub)
		}
	}
}

func (s *Store) dropLocked(sub *subscriber) {
	if !sub.closed {
		sub.closed = true
		close(sub.ch)
	}
	delete(s.subs, sub)
}

// Watch implements registry.Store. Changes come from memory; a watcher that
// lags more than WatchBuffer changes gets registry.ErrWatchTooSlow.
func (s *Store) Watch(ctx context.Context, since int64, fn func(registry.Event) error) error {
	s.mu.Lock()
	var first []registry.Event
	switch {
	case since > 0 && since == s.rev:
	case since > 0 && since < s.rev && len(s.history) > 0 && s.history[0].Revision <= since+1:
		i := sort.Search(len(s.history), func(i int) bool { return s.history[i].Revision > since })
		first = append(first, s.history[i:]...)
	default:
		snap, err := s.snapshotLocked()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		first = []registry.Event{{Type: registry.EventSnapshot, Revision: snap.Revision, Store: s.id, Entries: snap.Entries}}
	}
	sub := &subscriber{ch: make(chan registry.Event, s.opts.WatchBuffer)}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.dropLocked(sub)
		s.mu.Unlock()
	}()
	for _, ev := range first {
		if err := fn(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				s.mu.Lock()
				closed := s.closed
				s.mu.Unlock()
				if closed {
					return errors.New("watch: store closed")
				}
				return registry.ErrWatchTooSlow
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}
