package registry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultTTL is the lease of an entry that is not renewed; agents renew
// every DefaultRenewEvery, so two missed renewals still keep the entry.
const (
	DefaultTTL        = 30 * time.Second
	DefaultRenewEvery = 10 * time.Second
	// MinTTL and MaxTTL bound the lease a caller may ask for.
	MinTTL = 2 * time.Second
	MaxTTL = 5 * time.Minute
)

// ErrNotFound is returned by Renew and Delete for an entry that does not
// exist (never registered, deleted, or its lease expired).
var ErrNotFound = errors.New("entry not found")

// ErrRouteConflict is wrapped by a *ConflictError.
var ErrRouteConflict = errors.New("route prefix owned by another identity")

// ErrWatchTooSlow ends a watch whose reader fell too far behind; the watcher
// resumes from its last revision.
var ErrWatchTooSlow = errors.New("watcher too slow")

// ConflictError says which route prefix is owned by which other SPIFFE ID.
type ConflictError struct {
	Route string
	Owner string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("route prefix %q is owned by %s", e.Route, e.Owner)
}

// Unwrap makes errors.Is(err, ErrRouteConflict) true.
func (e *ConflictError) Unwrap() error { return ErrRouteConflict }

// Store keeps entries with leases and streams their changes. Implementations:
// registry/boltstore (embedded file) and registry/etcdstore. Both pass the
// conformance suite in registry/storetest.
type Store interface {
	// Put creates or replaces the entry e.Key() with a lease of ttl. It fails
	// with a *ConflictError, changing nothing, when one of e.Routes is owned
	// by an entry of another SPIFFE ID. It returns the stored entry with its
	// Revision and Expires set. e must be normalized and valid.
	Put(ctx context.Context, e Entry, ttl time.Duration) (Entry, error)
	// Renew extends the entry's lease by the ttl it was put with, or fails
	// with ErrNotFound.
	Renew(ctx context.Context, k Key) (Entry, error)
	// Delete removes the entry and its route claims, or fails with ErrNotFound.
	Delete(ctx context.Context, k Key) error
	// List returns every live entry and the revision they were read at.
	List(ctx context.Context) (Snapshot, error)
	// Keys returns the keys of the service's live entries (cheap: no values).
	Keys(ctx context.Context, service string) ([]Key, error)
	// Watch calls fn with a snapshot event and then with every change, in
	// revision order, until ctx ends (nil error), fn fails (its error) or the
	// store fails. With since > 0 it first tries to resume: it sends the
	// changes after since and a snapshot only if they are no longer known.
	Watch(ctx context.Context, since int64, fn func(Event) error) error
	// ID names this store's history: revisions from a store with another
	// ID (a new etcd cluster, a recreated file) mean nothing here, so a
	// watcher that resumes with another ID gets a snapshot.
	ID(ctx context.Context) (string, error)
	// Close releases the store.
	Close() error
}

// Snapshot is every entry at one revision, sorted by key.
type Snapshot struct {
	Revision int64   `json:"revision"`
	Entries  []Entry `json:"entries"`
}

// EventType says what an Event carries.
type EventType string

// Event types of a watch stream.
const (
	// EventSnapshot replaces the whole table with Entries at Revision.
	EventSnapshot EventType = "snapshot"
	// EventPut creates or replaces Entry.
	EventPut EventType = "put"
	// EventDelete removes Entry (deleted or expired).
	EventDelete EventType = "delete"
	// EventHeartbeat only says the stream is alive (HTTP API only).
	EventHeartbeat EventType = "heartbeat"
)

// Event is one element of a watch stream.
type Event struct {
	Type     EventType `json:"type"`
	Revision int64     `json:"revision"`
	// Store is the store's ID, on snapshots only.
	Store   string  `json:"store,omitempty"`
	Entry   *Entry  `json:"entry,omitempty"`
	Entries []Entry `json:"entries,omitempty"`
}
