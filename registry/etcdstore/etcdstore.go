package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshguard/meshguard/registry"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is where entries live in etcd unless Options.Prefix is set.
const DefaultPrefix = "/meshguard/registry/"

// maxAttempts bounds the optimistic retries of one Put under contention.
const maxAttempts = 16

// Options configure a Store.
type Options struct {
	// Prefix under which the store keeps its keys (DefaultPrefix if empty).
	// Replicas sharing a registry must use the same prefix.
	Prefix string
	// Now is the clock used to report Expires (time.Now if nil). Leases
	// themselves are etcd's and run on etcd's clock.
	Now func() time.Time
}

// Store is the etcd registry store. Keys:
//
//	<prefix>e/<service>/<address>        the entry (JSON), attached to its lease
//	<prefix>r/<route>/<service>/<address> a route claim (value: owner SPIFFE ID), same lease
//
// (path components are URL-escaped). An entry and its claims share one etcd
// lease, so expiry or revocation removes them in one revision.
type Store struct {
	cli  *clientv3.Client
	own  bool
	opts Options

	mu sync.Mutex
	id string
}

type record struct {
	Entry registry.Entry `json:"entry"`
	TTL   int64          `json:"ttl_seconds"`
	Lease int64          `json:"lease"`
}

// ParseURL turns "etcd://h1:2379,h2:2379" into client endpoints.
func ParseURL(spec string) ([]string, error) {
	rest, ok := strings.CutPrefix(spec, "etcd://")
	if !ok || rest == "" {
		return nil, fmt.Errorf("parse store %q: want etcd://host:port[,host:port...]", spec)
	}
	var eps []string
	for _, hp := range strings.Split(strings.TrimSuffix(rest, "/"), ",") {
		if err := registry.ValidateAddress(hp); err != nil {
			return nil, fmt.Errorf("parse store %q: %w", spec, err)
		}
		eps = append(eps, "http://"+hp)
	}
	return eps, nil
}

// Open connects to etcd at endpoints and checks that it answers.
func Open(ctx context.Context, endpoints []string, opts Options) (*Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      nopLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	s := New(cli, opts)
	s.own = true
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(sctx, s.opts.Prefix+"e/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return s, nil
}

// New returns a store on an existing client, which the caller closes.
func New(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{cli: cli, opts: opts}
}

// Close closes the client if Open made it.
func (s *Store) Close() error {
	if s.own {
		return s.cli.Close()
	}
	return nil
}

// ID implements registry.Store: the etcd cluster ID and the prefix.
func (s *Store) ID(ctx context.Context) (string, error) {
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if id != "" {
		return id, nil
	}
	resp, err := s.cli.Get(ctx, s.entriesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return "", fmt.Errorf("read etcd cluster ID: %w", err)
	}
	id = fmt.Sprintf("etcd-%016x%s", resp.Header.ClusterId, s.opts.Prefix)
	s.mu.Lock()
	s.id = id
	s.mu.Unlock()
	return id, nil
}

// Run does nothing until ctx ends: leases are etcd's. It exists so that
// both stores are run the same way.
func (s *Store) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func keySuffix(k registry.Key) string {
	return url.PathEscape(k.Service) + "/" + url.PathEscape(k.Address)
}

func (s *Store) entriesPrefix() string { return s.opts.Prefix + "e/" }

func (s *Store) entryKey(k registry.Key) string { return s.entriesPrefix() + keySuffix(k) }

func (s *Store) claimPrefix(route string) string {
	return s.opts.Prefix + "r/" + url.PathEscape(route) + "/"
}

func (s *Store) claimKey(route string, k registry.Key) string {
	return s.claimPrefix(route) + keySuffix(k)
}

func decode(v []byte) (record, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("decode entry: %w", err)
	}
	return r, nil
}

// Put implements registry.Store: read the entry and the claims of its
// routes at revision R, check ownership, then commit only if none of those
// keys changed after R (etcd Txn compares), retrying on contention.
func (s *Store) Put(ctx context.Context, e registry.Entry, ttl time.Duration) (registry.Entry, error) {
	e = e.Clone()
	k := e.Key()
	ek := s.entryKey(k)
	secs := int64((ttl + time.Second - 1) / time.Second)
	for range maxAttempts {
		ops := []clientv3.Op{clientv3.OpGet(ek)}
		for _, r := range e.Routes {
			ops = append(ops, clientv3.OpGet(s.claimPrefix(r), clientv3.WithPrefix()))
		}
		read, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return registry.Entry{}, fmt.Errorf("put %s: read: %w", k, err)
		}
		rev := read.Header.Revision
		var old *record
		var oldMod int64
		if kvs := read.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			r, err := decode(kvs[0].Value)
			if err != nil {
				return registry.Entry{}, fmt.Errorf("put %s: %w", k, err)
			}
			old, oldMod = &r, kvs[0].ModRevision
		}
		for i, r := range e.Routes {
			for _, kv := range read.Responses[i+1].GetResponseRange().Kvs {
				if string(kv.Value) != e.SPIFFEID {
					return registry.Entry{}, fmt.Errorf("put %s: %w", k, &registry.ConflictError{Route: r, Owner: string(kv.Value)})
				}
			}
		}
		lease, err := s.cli.Grant(ctx, secs)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("put %s: grant lease: %w", k, err)
		}
		e.Expires = s.opts.Now().Add(time.Duration(lease.TTL) * time.Second)
		val, err := json.Marshal(record{Entry: e, TTL: secs, Lease: int64(lease.ID)})
		if err != nil {
			return registry.Entry{}, fmt.Errorf("put %s: %w", k, err)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ek), "=", oldMod)}
		for _, r := range e.Routes {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.claimPrefix(r)).WithPrefix(), "<", rev+1))
		}
		var writes []clientv3.Op
		if old != nil {
			for _, r := range old.Entry.Routes {
				if !slices.Contains(e.Routes, r) {
					writes = append(writes, clientv3.OpDelete(s.claimKey(r, k)))
				}
			}
		}
		for _, r := range e.Routes {
			writes = append(writes, clientv3.OpPut(s.claimKey(r, k), e.SPIFFEID, clientv3.WithLease(lease.ID)))
		}
		writes = append(writes, clientv3.OpPut(ek, string(val), clientv3.WithLease(lease.ID)))
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(writes...).Commit()
		if err != nil || !resp.Succeeded {
			s.revoke(lease.ID)
			if err != nil {
				return registry.Entry{}, fmt.Errorf("put %s: commit: %w", k, err)
			}
			continue // something changed since rev: read again
		}
		if old != nil && old.Lease != int64(lease.ID) {
			s.revoke(clientv3.LeaseID(old.Lease))
		}
		e.Revision = resp.Header.Revision
		return e, nil
	}
	return registry.Entry{}, fmt.Errorf("put %s: gave up after %d attempts under contention", k, maxAttempts)
}

// revoke drops a lease we no longer need; failure only delays its expiry.
func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = s.cli.Revoke(ctx, id)
}

func (s *Store) get(ctx context.Context, k registry.Key) (record, int64, error) {
	resp, err := s.cli.Get(ctx, s.entryKey(k))
	if err != nil {
		return record{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return record{}, 0, registry.ErrNotFound
	}
	r, err := decode(resp.Kvs[0].Value)
	return r, resp.Kvs[0].ModRevision, err
}

// Renew implements registry.Store with one etcd lease keep-alive.
func (s *Store) Renew(ctx context.Context, k registry.Key) (registry.Entry, error) {
	r, mod, err := s.get(ctx, k)
	if err != nil {
		return registry.Entry{}, fmt.Errorf("renew %s: %w", k, err)
	}
	ka, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(r.Lease))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return registry.Entry{}, fmt.Errorf("renew %s: %w", k, registry.ErrNotFound)
	}
	if err != nil {
		return registry.Entry{}, fmt.Errorf("renew %s: %w", k, err)
	}
	e := r.Entry
	e.Revision = mod
	e.Expires = s.opts.Now().Add(time.Duration(ka.TTL) * time.Second)
	return e, nil
}

// Delete implements registry.Store by revoking the entry's lease, which
// removes the entry and its claims in one revision.
func (s *Store) Delete(ctx context.Context, k registry.Key) error {
	r, _, err := s.get(ctx, k)
	if err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(r.Lease)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("delete %s: %w", k, registry.ErrNotFound)
		}
		return fmt.Errorf("delete %s: %w", k, err)
	}
	return nil
}

// Keys implements registry.Store.
func (s *Store) Keys(ctx context.Context, service string) ([]registry.Key, error) {
	p := s.entriesPrefix() + url.PathEscape(service) + "/"
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", service, err)
	}
	keys := make([]registry.Key, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		addr, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p))
		if err != nil {
			return nil, fmt.Errorf("list keys of %s: %q: %w", service, kv.Key, err)
		}
		keys = append(keys, registry.Key{Service: service, Address: addr})
	}
	return keys, nil
}

func (s *Store) list(ctx context.Context) (registry.Snapshot, []int64, error) {
	resp, err := s.cli.Get(ctx, s.entriesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return registry.Snapshot{}, nil, fmt.Errorf("list entries: %w", err)
	}
	snap := registry.Snapshot{Revision: resp.Header.Revision, Entries: make([]registry.Entry, 0, len(resp.Kvs))}
	leases := make([]int64, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r, err := decode(kv.Value)
		if err != nil {
			return registry.Snapshot{}, nil, fmt.Errorf("list entries: %s: %w", kv.Key, err)
		}
		r.Entry.Revision = kv.ModRevision
		snap.Entries = append(snap.Entries, r.Entry)
		leases = append(leases, r.Lease)
	}
	return snap, leases, nil
}

// List implements registry.Store; Expires is read from each lease's
// remaining time to live.
func (s *Store) List(ctx context.Context) (registry.Snapshot, error) {
	snap, leases, err := s.list(ctx)
	if err != nil {
		return snap, err
	}
	now := s.opts.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range snap.Entries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(leases[i]))
			if err == nil && ttl.TTL >= 0 {
				snap.Entries[i].Expires = now.Add(time.Duration(ttl.TTL) * time.Second)
			}
		}()
	}
	wg.Wait()
	return snap, nil
}

// Watch implements registry.Store on etcd's watch. A resume from a
// compacted revision, or from a revision etcd has not reached (another
// cluster), starts with a snapshot.
func (s *Store) Watch(ctx context.Context, since int64, fn func(registry.Event) error) error {
	needSnap := since <= 0
	if !needSnap {
		resp, err := s.cli.Get(ctx, s.entriesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		needSnap = since > resp.Header.Revision
	}
	next := since + 1
	for {
		if needSnap {
			snap, _, err := s.list(ctx)
			if err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			id, err := s.ID(ctx)
			if err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			if err := fn(registry.Event{Type: registry.EventSnapshot, Revision: snap.Revision, Store: id, Entries: snap.Entries}); err != nil {
				return err
			}
			next = snap.Revision + 1
			needSnap = false
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.entriesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithPrevKV())
		err := s.pump(wch, fn, &next, &needSnap)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if !needSnap {
			return errors.New("watch: etcd closed the watch")
		}
	}
}

func (s *Store) pump(wch clientv3.WatchChan, fn func(registry.Event) error, next *int64, needSnap *bool) error {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			*needSnap = true
			return nil
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		for _, ev := range resp.Events {
			out := registry.Event{Revision: ev.Kv.ModRevision}
			switch ev.Type {
			case clientv3.EventTypePut:
				r, err := decode(ev.Kv.Value)
				if err != nil {
					return fmt.Errorf("watch: %s: %w", ev.Kv.Key, err)
				}
				r.Entry.Revision = ev.Kv.ModRevision
				out.Type, out.Entry = registry.EventPut, &r.Entry
			case clientv3.EventTypeDelete:
				e := s.deletedEntry(ev.Kv.Key, ev.PrevKv)
				e.Revision = ev.Kv.ModRevision
				out.Type, out.Entry = registry.EventDelete, &e
			default:
				continue
			}
			if err := fn(out); err != nil {
				return err
			}
			*next = ev.Kv.ModRevision + 1
		}
	}
	return nil
}

// deletedEntry is the previous value of a deleted key, or just its key.
func (s *Store) deletedEntry(key []byte, prev interface{ GetValue() []byte }) registry.Entry {
	if prev != nil {
		if v := prev.GetValue(); v != nil {
			if r, err := decode(v); err == nil {
				return r.Entry
			}
		}
	}
	rest := strings.TrimPrefix(string(key), s.entriesPrefix())
	svc, addr, _ := strings.Cut(rest, "/")
	svc, _ = url.PathUnescape(svc)
	addr, _ = url.PathUnescape(addr)
	return registry.Entry{Service: svc, Address: addr}
}
