//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// idleConnUsable reports whether an idle keep-alive connection can still
// carry a request: the app has neither closed it (EOF) nor sent anything
// unsolicited. It peeks without blocking, one system call. h1Client checks
// before a request whose body cannot be replayed, because such a request is
// not retried once its body was read.
func idleConnUsable(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	usable := true
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		usable = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && usable
}
