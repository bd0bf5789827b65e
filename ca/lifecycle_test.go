package ca

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
)

// lockedBuffer is a log sink shared by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSecretsNeverLogged(t *testing.T) {
	dir := newCADir(t)
	var logs lockedBuffer
	r := startServer(t, dir, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	const id = "spiffe://example.org/svc/quiet"
	tok := mustToken(t, dir, id)
	if code, _, raw := r.signWith(t, tok, newKey(t), id); code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	if code, _, _ := r.signWith(t, tok, newKey(t), id); code != 401 {
		t.Fatalf("replay: %d", code)
	}
	r.stop()
	out := logs.String()
	if !strings.Contains(out, `"msg":"certificate issued"`) || !strings.Contains(out, `"msg":"certificate request refused"`) {
		t.Fatalf("expected issuance and refusal logs, got:\n%s", out)
	}
	// Neither the token nor any of its three parts may appear.
	for i, part := range append(strings.Split(tok, "."), tok) {
		if strings.Contains(out, part) {
			t.Fatalf("token part %d appears in the logs:\n%s", i, out)
		}
	}
	for _, name := range []string{IntermediateKeyFile, ProvisionerKeyFile} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 20 && strings.Contains(out, line) {
				t.Fatalf("key material of %s appears in the logs", name)
			}
		}
	}
}

func TestRunLifecycle(t *testing.T) {
	dir := newCADir(t)
	before := runtime.NumGoroutine()
	srv, err := NewServer(Config{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != nil {
		t.Fatal("Addr before Ready")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()
	if srv.Addr() == nil {
		t.Fatal("no Addr after Ready")
	}
	if err := srv.Run(ctx); err == nil || err.Error() != "ca server: already running" {
		t.Fatalf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after Run: %v", err)
	}
	// The database is released: a new server opens it at once.
	srv2, err := NewServer(Config{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Example shows the whole life of a CA directory: init, a join token for
// one workload, and the server that redeems it.
func Example() {
	dir, _ := os.MkdirTemp("", "meshguard-ca")
	defer os.RemoveAll(dir)
	fp, err := Init(InitConfig{Dir: dir, TrustDomain: "example.org"})
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := CreateToken(dir, spiffeid.RequireFromString("spiffe://example.org/svc/web"), 10*time.Minute)
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := NewServer(Config{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	fmt.Println(len(fp), strings.Count(tok, "."), srv.TrustDomain())
	// Output: 64 2 example.org
}

func TestDatabaseKeepsTokensNotCertificates(t *testing.T) {
	dir := newCADir(t)
	r := startServer(t, dir, nil)
	const id = "spiffe://example.org/svc/db"
	key := newKey(t)
	code, resp, raw := r.signWith(t, mustToken(t, dir, id), key, id)
	if code != 201 {
		t.Fatalf("sign: %d %s", code, raw)
	}
	client := r.client(t, tlsCert(t, resp, key))
	for i := 0; i < 3; i++ {
		if code, _, raw := post(t, client, r.url+"/1.0/renew", nil); code != 201 {
			t.Fatalf("renew: %d %s", code, raw)
		}
	}
	r.stop()
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(bucket string) int {
		n := 0
		_ = db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket([]byte(bucket)); b != nil {
				n = b.Stats().KeyN
			}
			return nil
		})
		return n
	}
	if n := count("used_ott"); n != 1 {
		t.Errorf("used_ott has %d entries, want 1", n)
	}
	if n := count("x509_certs") + count("x509_certs_data"); n != 0 {
		t.Errorf("%d certificate records stored, want none", n)
	}
}
