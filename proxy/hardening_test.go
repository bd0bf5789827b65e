package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestOutboundNeverUpgradesH2C: an HTTP/1.1 "Upgrade: h2c" request is
// answered as plain HTTP/1.1 and the upgrade headers never leave the agent.
func TestOutboundNeverUpgradesH2C(t *testing.T) {
	var seen http.Header
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() })
	m := newMesh(t, meshOpts{app: app})
	c, err := net.Dial("tcp", m.out.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: users\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Fatalf("got %s %d, want HTTP/1.1 200", resp.Proto, resp.StatusCode)
	}
	for _, h := range []string{"Upgrade", "Http2-Settings", "Connection"} {
		if v := seen.Get(h); v != "" {
			t.Errorf("app received %s: %q", h, v)
		}
	}
}

// TestHeaderSizeLimit: headers past --max-header-bytes are refused (431) on
// both listeners.
func TestHeaderSizeLimit(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp()})
	big := strings.Repeat("a", 80<<10)
	c := newClient()
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, m.outURL+"/x", nil)
	req.Host = "users"
	req.Header.Set("X-Big", big)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("outbound: status %d, want 431", resp.StatusCode)
	}
	resp2, _ := rawInbound(t, m, "GET / HTTP/1.1\r\nHost: users\r\nX-Big: "+big+"\r\n\r\n")
	if resp2.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("inbound: status %d, want 431", resp2.StatusCode)
	}
}

// h2Conn is a raw HTTP/2 client over mTLS to the inbound listener.
type h2Conn struct {
	c      *tls.Conn
	fr     *http2.Framer
	frames chan http2.Frame
	errc   chan error
}

func dialH2(t *testing.T, m *mesh) *h2Conn {
	t.Helper()
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{testca.TLSCertificate(m.webSrc.Current())}}
	c, err := tls.Dial("tcp", m.in.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c), frames: make(chan http2.Frame, 1024), errc: make(chan error, 1)}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		rd := http2.NewFramer(nil, c)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				h.errc <- err
				close(h.frames)
				return
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				continue
			}
			select {
			case h.frames <- f:
			default:
			}
		}
	}()
	return h
}

func (h *h2Conn) headerBlock(extra ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "users"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return buf.Bytes()
}

// goAway waits for the server's GOAWAY and returns its code.
func (h *h2Conn) goAway(t *testing.T) http2.ErrCode {
	t.Helper()
	for f := range h.frames {
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode
		}
	}
	t.Fatalf("connection ended without GOAWAY: %v", <-h.errc)
	return 0
}

// TestRapidResetBounded (CVE-2023-44487): a client that opens and resets
// streams faster than handlers finish cannot run more than
// MaxConcurrentStreams handlers at once, and is cut off with GOAWAY
// ENHANCE_YOUR_CALM.
func TestRapidResetBounded(t *testing.T) {
	const streams = 4
	m := newMesh(t, meshOpts{app: echoApp(), inTweak: func(c *InboundConfig) { c.MaxConcurrentStreams = streams }})
	m.authz.block = make(chan struct{})
	defer close(m.authz.block)
	h := dialH2(t, m)
	block := h.headerBlock()
	var writeErr error
	for id := uint32(1); id < 2*100 && writeErr == nil; id += 2 {
		writeErr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
		if writeErr == nil {
			writeErr = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	}
	if code := h.goAway(t); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY code %v, want ENHANCE_YOUR_CALM", code)
	}
	if n := m.authz.calls.Load(); n > streams {
		t.Fatalf("%d handlers ran concurrently, limit %d", n, streams)
	}
}

// TestContinuationFlood (CVE-2023-45288): a header block split over
// CONTINUATION frames that grows past the header size limit is cut off with
// GOAWAY PROTOCOL_ERROR, instead of being read and decoded forever. The
// client sends a bounded block (twice the limit) that it never ends: a
// server that enforces the limit answers GOAWAY; one that does not keeps
// waiting for the end of the block, and the deadline fails the test. (Counting
// the bytes a client manages to write before it sees the GOAWAY would measure
// kernel socket buffers and scheduling, not the server.)
func TestContinuationFlood(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp()})
	h := dialH2(t, m)
	cont := h.headerBlock("x-flood", strings.Repeat("a", 15000))[len(h.headerBlock()):]
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock(), EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	for sent := 0; sent < 2*DefaultMaxHeaderBytes; sent += len(cont) {
		if err := h.fr.WriteContinuation(1, false, cont); err != nil {
			break // the server already closed the connection
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-h.frames:
			if !ok {
				t.Fatalf("connection ended without GOAWAY: %v", <-h.errc)
			}
			if g, isGA := f.(*http2.GoAwayFrame); isGA {
				if g.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("GOAWAY code %v, want PROTOCOL_ERROR", g.ErrCode)
				}
				if m.authz.calls.Load() != 0 {
					t.Fatal("flooded request reached the policy")
				}
				return
			}
		case <-deadline:
			t.Fatalf("no GOAWAY within 10s of an unfinished header block of %d bytes (limit %d): the server keeps reading it", 2*DefaultMaxHeaderBytes, DefaultMaxHeaderBytes)
		}
	}
}
