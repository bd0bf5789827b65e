package rawsock

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a *net.TCPConn whose Read and Write use raw system calls.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
	r  call // the Read in progress
	w  call // the Write in progress
}

// call is the state of one direction's Read or Write in progress, which
// its RawConn callback (step, a method value made once: a closure per call
// would be an allocation per call) works on.
type call struct {
	mu    sync.Mutex
	buf   []byte
	n     int
	errno syscall.Errno
	step  func(fd uintptr) bool
}

func wrapTCP(tc *net.TCPConn) net.Conn {
	rc, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &Conn{TCPConn: tc, rc: rc}
	c.r.step = c.read
	c.w.step = c.write
	return c
}

// Read reads like net.Conn's Read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Read(p)
	}
	return c.do(&c.r, p, false)
}

// Write writes all of p like net.Conn's Write.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return c.TCPConn.Write(p)
	}
	return c.do(&c.w, p, true)
}

// do runs one Read or Write of p through RawConn and returns what
// net.Conn's would: n, and the poller's error (closed, deadline) or else
// the system call's; a read of nothing is the end of the stream.
func (c *Conn) do(k *call, p []byte, write bool) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.buf, k.n, k.errno = p, 0, 0
	var err error
	op := "read"
	if write {
		op = "write"
		err = c.rc.Write(k.step)
	} else {
		err = c.rc.Read(k.step)
	}
	n, errno := k.n, k.errno
	k.buf = nil
	switch {
	case err != nil:
		return n, c.opError(op, err)
	case errno != 0:
		return n, c.opError(op, errno)
	case n == 0 && !write:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, e := sysRead(fd, c.r.buf)
		switch e {
		case 0:
			c.r.n = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits for data, or for the deadline
		default:
			c.r.errno = e
			return true
		}
	}
}

func (c *Conn) write(fd uintptr) bool {
	for c.w.n < len(c.w.buf) {
		n, e := sysWrite(fd, c.w.buf[c.w.n:])
		switch e {
		case 0:
			c.w.n += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits for room, or for the deadline
		default:
			c.w.errno = e
			return true
		}
	}
	return true
}

// opError wraps err as net.Conn's methods do. RawConn's own errors
// (closed, deadline) are already *net.OpError: their Op is renamed.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = op
		return &e
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
