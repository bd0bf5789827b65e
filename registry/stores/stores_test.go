package stores_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshguard/meshguard/registry/stores"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	st, err := stores.Open(context.Background(), "", dir, stores.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	fi, err := os.Stat(filepath.Join(dir, stores.FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file: %v, %v", fi, err)
	}
	tests := []struct{ spec, dir, want string }{
		{"", "", "open registry store: the embedded store needs the CA directory"},
		{"redis://x:1", dir, `open registry store: unknown store "redis://x:1": want etcd://host:port[,host:port...] or nothing for the embedded store`},
		{"etcd://", dir, `parse store "etcd://": want etcd://host:port[,host:port...]`},
	}
	for _, tt := range tests {
		if _, err := stores.Open(context.Background(), tt.spec, tt.dir, stores.Options{}); err == nil || err.Error() != tt.want {
			t.Errorf("Open(%q) = %v, want %q", tt.spec, err, tt.want)
		}
	}
}
