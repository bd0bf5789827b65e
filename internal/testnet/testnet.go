// Package testnet has network helpers for tests: loopback only. It is
// imported only by tests.
package testnet

import (
	"net"
	"testing"
)

// TCPPair returns both ends of a loopback TCP connection; the test's
// cleanup closes them.
func TCPPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		_ = c.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}
