package registry_test

import (
	"github.com/meshguard/meshguard/internal/clock"

	"context"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"github.com/meshguard/meshguard/registry"
)

var ourFrame = regexp.MustCompile(`github\.com/meshguard/meshguard/registry(/[a-z]+)?\.`)

// ourGoroutines returns the stacks of goroutines running registry code.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if ourFrame.MatchString(g) {
			out = append(out, g)
		}
	}
	return out
}

// TestNoGoroutineLeak: once their contexts end, the watcher, the registrar
// and the API's watch streams leave no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	if n := len(ourGoroutines()); n != 0 {
		t.Skipf("%d registry goroutines left by earlier tests; run this test alone to check", n)
	}
	func() {
		st := openBolt(t, clock.NewFake(time.Now()))
		m := serve(t, testca.New(t, td), st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w, err := registry.NewWatcher(registry.WatcherConfig{Client: m.client(svcID("web")), DataDir: t.TempDir(), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := registry.NewRegistrar(registry.RegistrarConfig{Client: m.client(svcID("users")), Registration: reg("users", "10.0.0.1:1", "/users"), Logger: quietLogger(), RenewEvery: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wDone, rDone := make(chan error, 1), make(chan error, 1)
		go func() { wDone <- w.Run(ctx) }()
		go func() { rDone <- r.Run(ctx) }()
		eventually(t, "the watcher to see the registration", func() bool { return len(w.Table().Endpoints("users")) == 1 })
		if err := r.Deregister(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-rDone
		cancel()
		<-wDone
		m.srv.CloseClientConnections()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := ourGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d registry goroutines still running:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
