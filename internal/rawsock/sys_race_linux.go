//go:build race

package rawsock

import "syscall"

// With the race detector, reads and writes go through package syscall's,
// which tell the detector that what one goroutine writes to a descriptor
// happens before another reads it (as net.Conn's do). Raw system calls
// would hide that ordering and make every test that synchronises through a
// socket report races. Everything else (the poller, EAGAIN, errors) is the
// same code as without the detector.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return errnoOf(n, err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return errnoOf(n, err)
}

func errnoOf(n int, err error) (int, syscall.Errno) {
	if err == nil {
		return n, 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return 0, e
	}
	return 0, syscall.EIO
}
