package proxy

import (
	"net/http"
	"strconv"
	"sync"
)

// writeJSONError writes a small JSON error body. The values are fixed
// strings or IDs chosen by meshguard, never echoed request bytes, so plain
// concatenation with quoting is safe.
func writeJSONError(w http.ResponseWriter, code int, msg string, extra ...string) {
	b := make([]byte, 0, 96)
	b = append(b, `{"error":`...)
	b = strconv.AppendQuote(b, msg)
	for i := 0; i+1 < len(extra); i += 2 {
		b = append(b, ',')
		b = strconv.AppendQuote(b, extra[i])
		b = append(b, ':')
		b = strconv.AppendQuote(b, extra[i+1])
	}
	b = append(b, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// bufferPool is a bounded free list of 32 KiB copy buffers (a channel, so
// Get and Put do not allocate).
type bufferPool chan []byte

const copyBufSize = 32 << 10

func newBufferPool(n int) bufferPool { return make(bufferPool, n) }

func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, copyBufSize)
	}
}

func (p bufferPool) Put(b []byte) {
	if cap(b) < copyBufSize {
		return
	}
	select {
	case p <- b[:copyBufSize]:
	default:
	}
}

// statusWriter records the final status code written through it. It keeps
// Flush, Hijack-free streaming and trailers working by delegating and by
// Unwrap for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code int
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func getStatusWriter(w http.ResponseWriter) *statusWriter {
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter, sw.code = w, 0
	return sw
}

func putStatusWriter(sw *statusWriter) {
	sw.ResponseWriter = nil
	statusWriters.Put(sw)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
