package ca

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// memLedger is a TokenLedger in memory, shared by the replicas of a test.
type memLedger struct {
	mu   sync.Mutex
	used map[string]time.Time
	err  error
}

func (l *memLedger) Use(_ context.Context, id string, exp time.Time) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false, l.err
	}
	if _, ok := l.used[id]; ok {
		return false, nil
	}
	l.used[id] = exp
	return true, nil
}

// replicaDir copies a CA directory without its database, as an operator
// deploys a second `ca serve` replica.
func replicaDir(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	for _, name := range caFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestTokenLedgerAcrossReplicas(t *testing.T) {
	dir := newCADir(t)
	const id = "spiffe://example.org/svc/replicated"

	// Without a shared ledger each replica's database knows only its own
	// tokens: the same token works once per replica.
	a := startServer(t, dir, nil)
	b := startServer(t, replicaDir(t, dir), nil)
	tok := mustToken(t, dir, id)
	if code, _, raw := a.signWith(t, tok, newKey(t), id); code != 201 {
		t.Fatalf("replica a: %d %s", code, raw)
	}
	if code, _, raw := b.signWith(t, tok, newKey(t), id); code != 201 {
		t.Fatalf("replica b without ledger: %d %s (the gap the ledger closes)", code, raw)
	}

	ledger := &memLedger{used: map[string]time.Time{}}
	withLedger := func(c *Config) { c.TokenLedger = ledger }
	c := startServer(t, replicaDir(t, dir), withLedger)
	d := startServer(t, replicaDir(t, dir), withLedger)
	tok = mustToken(t, dir, id)
	if code, _, raw := c.signWith(t, tok, newKey(t), id); code != 201 {
		t.Fatalf("replica c: %d %s", code, raw)
	}
	code, resp, raw := d.signWith(t, tok, newKey(t), id)
	if code != 401 || resp.Message != "the token was already used; join tokens are single use" {
		t.Fatalf("replica d replay: %d %s; want 401", code, raw)
	}
	// Tokens that do not verify never reach the ledger.
	other := newCADir(t)
	if code, _, _ := d.signWith(t, mustToken(t, other, id), newKey(t), id); code != 401 {
		t.Fatalf("foreign token: %d", code)
	}
	if len(ledger.used) != 1 {
		t.Fatalf("ledger holds %d IDs, want 1", len(ledger.used))
	}

	// A ledger that cannot answer stops issuance (fail closed).
	ledger.mu.Lock()
	ledger.err = errors.New("etcd down")
	ledger.mu.Unlock()
	code, resp, raw = d.signWith(t, mustToken(t, dir, id), newKey(t), id)
	if code != 503 || resp.Message != "the CA cannot record token use right now; retry later" {
		t.Fatalf("ledger down: %d %s; want 503", code, raw)
	}
}
