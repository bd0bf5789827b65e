package h2meta

import (
	"io"
	"sync/atomic"
	"time"
)

// ActivityReader is the reader under a connection's frame reader: it
// records in Last (unix nanoseconds) the time of every read that returned
// data. That is the connection's liveness clock for PING and idle checks,
// at one clock reading per read system call instead of one per frame.
type ActivityReader struct {
	R    io.Reader
	Last *atomic.Int64
}

// Read reads from R and stamps Last when data arrived.
func (a ActivityReader) Read(p []byte) (int, error) {
	n, err := a.R.Read(p)
	if n > 0 {
		a.Last.Store(time.Now().UnixNano())
	}
	return n, err
}
