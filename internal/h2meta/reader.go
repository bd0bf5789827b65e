// Package h2meta reads HTTP/2 frames with header blocks decoded, as
// x/net/http2's Framer does with ReadMetaHeaders set, and encodes header
// blocks (Encoder), for meshguard's HTTP/2 server and client.
//
// The difference is allocation: x/net builds a new MetaHeadersFrame, a
// closure with its captured state and a growing Fields slice for every
// HEADERS frame (about ten allocations, the largest share of an agent's
// per-request garbage). Reader keeps one of each per connection, reused:
// the frame it returns is valid until the next ReadFrame, which is how
// both callers use it (the field strings themselves are not reused).
//
// The checks are x/net's: the header list size limit (a block past it is
// Truncated; a fragment far past it, or a CONTINUATION after an invalid
// field, is a connection error: the CONTINUATION-flood cutoff,
// CVE-2023-45288), field names lowercase tokens, values free of control
// bytes, pseudo-headers first, known and not repeated, and request and
// response pseudo-headers not mixed (stream errors). Frame order
// (CONTINUATION only right after its HEADERS) is enforced by the Framer.
package h2meta

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Reader reads frames from a Framer whose ReadMetaHeaders is nil.
type Reader struct {
	fr      *http2.Framer
	dec     *hpack.Decoder
	maxList uint32

	mh     http2.MetaHeadersFrame
	fields []hpack.HeaderField

	// The block being decoded.
	headersLeft  uint32
	trailersLeft uint32
	sawRegular   bool
	invalid      error
}

// New returns a Reader of fr's frames; header lists may decode to at most
// maxList bytes (RFC 9113 §6.5.2 sizes), 0 meaning 16 MiB as in x/net.
func New(fr *http2.Framer, maxList uint32) *Reader {
	if maxList == 0 {
		maxList = 16 << 20
	}
	r := &Reader{fr: fr, maxList: maxList}
	r.dec = hpack.NewDecoder(4096, r.emit)
	return r
}

// ReadFrame returns the next frame; a HEADERS frame and its CONTINUATION
// frames come back as one *http2.MetaHeadersFrame, reused by the next call.
// Errors are x/net's types: http2.ConnectionError and http2.StreamError.
func (r *Reader) ReadFrame() (http2.Frame, error) {
	f, err := r.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		return f, nil
	}
	return r.readBlock(hf)
}

func (r *Reader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		r.invalid = fmt.Errorf("invalid value for header field %q", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if r.sawRegular {
			r.invalid = errors.New("pseudo header field after regular")
		}
	} else {
		r.sawRegular = true
		if !validWireName(hf.Name) {
			r.invalid = fmt.Errorf("invalid header field name %q", hf.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	left := &r.headersLeft
	size := hf.Size()
	if hf.Name == "trailer" {
		left = &r.trailersLeft
		n := uint32(strings.Count(hf.Value, ",") + 1)
		size = uint32(len(hf.Value)) - n + 1 + n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		r.dec.SetEmitEnabled(false)
		r.mh.Truncated = true
		r.headersLeft, r.trailersLeft = 0, 0
		return
	}
	*left -= size
	r.fields = append(r.fields, hf)
}

func (r *Reader) readBlock(hf *http2.HeadersFrame) (http2.Frame, error) {
	r.mh = http2.MetaHeadersFrame{HeadersFrame: hf}
	r.fields = r.fields[:0]
	r.headersLeft, r.trailersLeft = r.maxList, r.maxList
	r.sawRegular, r.invalid = false, nil
	r.dec.SetEmitEnabled(true)
	r.dec.SetMaxStringLength(int(min(uint64(r.maxList), 1<<31-1)))
	id := hf.StreamID
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// Do not decode what will be thrown away: far past the limit, or
		// after an invalid field (whose size was not counted), the
		// connection is cut.
		if int64(len(frag)) > 2*int64(r.headersLeft+r.trailersLeft) || r.invalid != nil {
			r.dec.SetEmitEnabled(false)
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // guaranteed by the Framer's order check
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	r.mh.Fields = r.fields
	if err := checkPseudos(r.mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: err}
	}
	if cap(r.fields) > 256 {
		r.fields = nil // a huge block does not pin its array
	}
	return &r.mh, nil
}

func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

func checkPseudos(pf []hpack.HeaderField) error {
	var isRequest, isResponse bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", hf.Name)
		}
		for _, prev := range pf[:i] {
			if hf.Name == prev.Name {
				return fmt.Errorf("duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if isRequest && isResponse {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}
