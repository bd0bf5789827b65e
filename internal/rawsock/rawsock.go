// Package rawsock reads and writes a TCP connection's socket without
// telling the Go scheduler that a system call is in progress.
//
// A socket under package net is non-blocking: read and write return at
// once, with data or with EAGAIN, after which the runtime's poller waits.
// Yet net.Conn brackets each of them with entersyscall/exitsyscall, as if
// they could block, and under load that bookkeeping costs more than the
// calls. A loopback write runs the receiver's TCP stack and wakes it; when
// the woken process preempts the writer's thread, the "system call" lasts
// long enough for the runtime's monitor thread (sysmon, which then polls
// every 20 µs) to take the processor away and wake another thread for it,
// and the writer's thread, back from the kernel without a processor, goes
// to sleep; after an idle spell, the first system call also wakes sysmon.
// Measured with perf on the edge path at full load, sysmon's wake-ups were
// a quarter of the agent's context switches and over a third of the edge's,
// and with the hand-offs about half of the agent's futex calls.
//
// Here the read and write system calls are issued raw, inside
// syscall.RawConn's Read and Write, which keep the poller's waiting,
// deadlines and close handling: the scheduler sees running Go code, and a
// preempted writer keeps its processor like any running goroutine (the
// goroutines queued on it can still be stolen by the other processors).
// The calls cannot block the thread: the descriptor is non-blocking.
package rawsock

import (
	"net"
)

// Wrap returns c with its Read and Write on raw system calls when c is a
// *net.TCPConn on Linux, and c itself otherwise.
// The wrapper keeps every other method of the *net.TCPConn.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return wrapTCP(tc)
}
