//go:build unix

package proxy

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system CPU time of the whole process (all
// threads, GC included). Benchmarks report it per operation beside ns/op:
// on a machine shared with other work, wall time per op grows with the
// load, CPU time per op much less.
func processCPUTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
