package h2meta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// block encodes fields (name, value pairs) with a fresh HPACK encoder.
func block(kv ...string) []byte {
	var buf bytes.Buffer
	e := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(kv); i += 2 {
		_ = e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return buf.Bytes()
}

// frames writes a HEADERS frame carrying blk in chunks of at most split
// bytes (the rest as CONTINUATION frames), then a PING.
func frames(blk []byte, split int) []byte {
	var out bytes.Buffer
	fw := http2.NewFramer(&out, nil)
	first := true
	for first || len(blk) > 0 {
		n := min(split, len(blk))
		chunk := blk[:n]
		blk = blk[n:]
		if first {
			_ = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: chunk, EndStream: true, EndHeaders: len(blk) == 0})
			first = false
		} else {
			_ = fw.WriteContinuation(1, len(blk) == 0, chunk)
		}
	}
	_ = fw.WritePing(false, [8]byte{})
	return out.Bytes()
}

// outcome is what a reader made of the stream: the fields (or the error
// kind) of the first frame, and whether the next frame was the PING.
func outcome(f http2.Frame, err error) string {
	if err != nil {
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			return fmt.Sprintf("stream error %v", se.Code)
		case errors.As(err, &ce):
			return fmt.Sprintf("connection error %v", http2.ErrCode(ce))
		}
		return "error " + err.Error()
	}
	mh, ok := f.(*http2.MetaHeadersFrame)
	if !ok {
		return fmt.Sprintf("frame %T", f)
	}
	return fmt.Sprintf("fields %v truncated %v end %v", mh.Fields, mh.Truncated, mh.StreamEnded())
}

// TestReaderMatchesXNet: for valid, malformed and hostile header blocks,
// Reader decides exactly as x/net's Framer with ReadMetaHeaders: same
// fields, same truncation, same stream or connection error.
func TestReaderMatchesXNet(t *testing.T) {
	const limit = 1024
	big := strings.Repeat("v", 600)
	tests := []struct {
		name  string
		blk   []byte
		split int
	}{
		{"request", block(":method", "GET", ":scheme", "https", ":authority", "users", ":path", "/users/1", "accept", "*/*"), 16384},
		{"response", block(":status", "200", "content-type", "text/plain", "set-cookie", "a", "set-cookie", "b"), 16384},
		{"split over continuations", block(":method", "GET", ":path", "/", "x-a", strings.Repeat("a", 100), "x-b", "b"), 7},
		{"uppercase name", block(":method", "GET", ":path", "/", "X-Upper", "1"), 16384},
		{"pseudo after regular", block(":method", "GET", "accept", "x", ":path", "/"), 16384},
		{"unknown pseudo", block(":method", "GET", ":bogus", "1"), 16384},
		{"duplicate pseudo", block(":method", "GET", ":method", "POST"), 16384},
		{"request and response pseudo", block(":method", "GET", ":status", "200"), 16384},
		{"control byte in value", block(":method", "GET", "x-a", "a\x00b"), 16384},
		{"empty name", block(":method", "GET", "", "x"), 16384},
		{"just over the limit", block(":method", "GET", "x-a", big, "x-b", big), 16384},
		{"trailer list counted apart", block(":method", "GET", "trailer", "a,b,c", "x-a", big), 16384},
		{"continuation flood", block(":method", "GET", "x-a", strings.Repeat("z", 5000)), 100},
		{"one huge fragment", block(":method", "GET", "x-a", strings.Repeat("z", 3000)), 16384},
		{"garbage hpack", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 16384},
		{"truncated hpack", block(":method", "GET", "x-a", "abcdef")[:8], 16384},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire := frames(tc.blk, tc.split)
			xf := http2.NewFramer(nil, bytes.NewReader(wire))
			xf.MaxHeaderListSize = limit
			xf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			want := outcome(xf.ReadFrame())
			mf := http2.NewFramer(nil, bytes.NewReader(wire))
			r := New(mf, limit)
			got := outcome(r.ReadFrame())
			if got != want {
				t.Fatalf("h2meta: %s\nx/net:  %s", got, want)
			}
			if strings.HasPrefix(want, "fields") || strings.HasPrefix(want, "stream") {
				wantNext := outcome(xf.ReadFrame())
				if gotNext := outcome(r.ReadFrame()); gotNext != wantNext {
					t.Fatalf("next frame: h2meta %s, x/net %s", gotNext, wantNext)
				}
			}
		})
	}
}

// TestReaderReuse: the frame is reused, its field strings are not: fields
// kept from one block survive the next.
func TestReaderReuse(t *testing.T) {
	var wire bytes.Buffer
	fw := http2.NewFramer(&wire, nil)
	var hb bytes.Buffer
	e := hpack.NewEncoder(&hb)
	for i, v := range []string{"first", "second"} {
		hb.Reset()
		_ = e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		_ = e.WriteField(hpack.HeaderField{Name: "x-v", Value: v})
		_ = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
	}
	r := New(http2.NewFramer(nil, &wire), 0)
	f1, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	kept := f1.(*http2.MetaHeadersFrame).Fields[1].Value
	f2, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	mh := f2.(*http2.MetaHeadersFrame)
	if kept != "first" || mh.Fields[1].Value != "second" || mh.StreamID != 3 {
		t.Fatalf("kept %q, second frame %v", kept, mh.Fields)
	}
}

// TestReaderAllocations: a header block of fields from the static table
// costs one allocation per frame, the Framer's own HeadersFrame (x/net's
// ReadMetaHeaders path makes several more).
func TestReaderAllocations(t *testing.T) {
	const n = 200
	var wire bytes.Buffer
	fw := http2.NewFramer(&wire, nil)
	blk := block(":status", "200")
	for i := 0; i < n; i++ {
		_ = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: blk, EndHeaders: true})
	}
	data := wire.Bytes()
	src := bytes.NewReader(data)
	r := New(http2.NewFramer(nil, src), 0)
	allocs := testing.AllocsPerRun(5, func() {
		src.Reset(data)
		for i := 0; i < n; i++ {
			if _, err := r.ReadFrame(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if per := allocs / n; per > 1 {
		t.Fatalf("%.2f allocations per HEADERS frame, want at most 1", per)
	}
}

// TestActivityReader: a read that returns data moves the stamp forward; one
// that returns nothing (EOF) leaves it alone.
func TestActivityReader(t *testing.T) {
	var last atomic.Int64
	r := ActivityReader{R: strings.NewReader("abc"), Last: &last}
	before := time.Now().UnixNano()
	buf := make([]byte, 8)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	stamp := last.Load()
	if stamp < before || stamp > time.Now().UnixNano() {
		t.Fatalf("stamp %d outside [%d, now]", stamp, before)
	}
	last.Store(1)
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at EOF = %d, %v", n, err)
	}
	if last.Load() != 1 {
		t.Fatal("an empty read moved the stamp")
	}
}
