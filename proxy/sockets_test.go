package proxy

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/rawsock"
)

// TestDataPlaneSocketsAreRaw: the connections the listeners accept and the
// ones dialed to the app read and write with raw system calls (see
// internal/rawsock); a refactor that loses the wrapping fails here, not
// only in a benchmark.
func TestDataPlaneSocketsAreRaw(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw socket calls are Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn, 1)
	l := newConnListener(ln, func(_ context.Context, raw net.Conn) (*framingConn, bool, error) {
		got <- raw
		_ = raw.Close()
		return nil, false, errors.New("test: not served")
	}, time.Second, func(net.Addr, error) {}, func(net.Conn) {})
	defer l.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case raw := <-got:
		if _, ok := raw.(*rawsock.Conn); !ok {
			t.Errorf("accepted connection is a %T, want *rawsock.Conn", raw)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not prepare the connection")
	}

	cl := newH1Client(ln.Addr().String(), DefaultMaxHeaderBytes, newStartClock(nil))
	hc, err := cl.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer hc.nc.Close()
	if _, ok := hc.nc.(*rawsock.Conn); !ok {
		t.Errorf("connection to the app is a %T, want *rawsock.Conn", hc.nc)
	}
}
