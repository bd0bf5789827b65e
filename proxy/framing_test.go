package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/testca"
)

// framingStream is a pipelined sequence of requests and the verdict each
// should get (true = refuse).
var framingStream = []struct {
	raw    string
	refuse bool
}{
	{"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nxx", false},
	{"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8;ext=1\r\nX: 1\r\n\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", false},
	{"\r\nGET /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false},
	{"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", false},
	{"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
	{"POST /g HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", true},
}

func TestH1ScannerVerdicts(t *testing.T) {
	var all strings.Builder
	var want []bool
	for _, r := range framingStream {
		all.WriteString(r.raw)
		want = append(want, r.refuse)
	}
	stream := all.String()
	// Whatever the read boundaries, the verdicts are the same.
	for _, step := range []int{1, 2, 3, 7, 64, len(stream)} {
		var s h1Scanner
		for i := 0; i < len(stream); i += step {
			s.feed([]byte(stream[i:min(i+step, len(stream))]))
		}
		if !slices.Equal(s.verdicts, want) || s.lost {
			t.Fatalf("step %d: verdicts %v (lost %v), want %v", step, s.verdicts, s.lost, want)
		}
	}
	var s h1Scanner
	s.feed([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"))
	if !s.lost {
		t.Fatal("unframeable coding did not make the scanner give up")
	}
	s.refuse()               // the request itself: Go answers 501 for the coding
	for i := 0; i < 2; i++ { // every later request, not just the next one
		if !s.refuse() {
			t.Fatalf("a lost scanner must refuse later requests (fail closed): request %d accepted", i+1)
		}
	}
	var h2c h1Scanner
	h2c.feed([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\n\n\n\n"))
	if !h2c.lost || len(h2c.verdicts) != 0 {
		t.Fatalf("h2c preface: lost %v, verdicts %v; want the scanner to stop", h2c.lost, h2c.verdicts)
	}
	var flood h1Scanner
	flood.feed([]byte(strings.Repeat("GET / HTTP/1.1\r\n\r\n", maxVerdicts+1)))
	if !flood.lost || len(flood.verdicts) != maxVerdicts {
		t.Fatalf("unasked verdicts not bounded: %d queued, lost %v", len(flood.verdicts), flood.lost)
	}
	var long h1Scanner
	long.feed([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxScanLine+1)))
	if !long.lost {
		t.Fatal("an over-long line did not make the scanner give up")
	}
}

// TestInboundKeepAliveFraming: pipelined requests with fixed, chunked and
// empty bodies on one TLS connection are all served; the smuggling attempt
// that follows is a 400 and closes the connection.
func TestInboundKeepAliveFraming(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp()})
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
		Certificates: []tls.Certificate{testca.TLSCertificate(m.webSrc.Current())}}
	c, err := tls.Dial("tcp", m.in.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, r := range framingStream[:6] {
		if _, err := io.WriteString(c, r.raw); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	for i, r := range framingStream[:6] {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := http.StatusOK
		if r.refuse {
			want = http.StatusBadRequest
		}
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("connection stayed open after a smuggling attempt")
	}
}

// TestOutboundSmuggling: the local listener refuses CL+TE too.
func TestOutboundSmuggling(t *testing.T) {
	m := newMesh(t, meshOpts{app: echoApp()})
	c, err := net.Dial("tcp", m.out.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: users\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	if len(m.authz.seen) != 0 {
		t.Fatal("smuggling attempt reached the peer's policy")
	}
}

// TestInboundSlowAndGarbageClients: clients that never handshake or send
// garbage do not hold up a real peer (handshakes run concurrently).
func TestInboundSlowAndGarbageClients(t *testing.T) {
	var logs syncBuffer
	m := newMesh(t, meshOpts{app: echoApp(), inTweak: func(c *InboundConfig) { c.Logger = debugLogger(&logs) }})
	for i := 0; i < 8; i++ {
		idle, err := net.Dial("tcp", m.in.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
	}
	garbage, err := net.Dial("tcp", m.in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	io.WriteString(garbage, "GET / HTTP/1.1\r\nHost: users\r\n\r\n")
	c := newClient()
	defer c.CloseIdleConnections()
	if resp, body := get(t, c, m.outURL+"/a", "users"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	eventually(t, "garbage handshake logged", func() bool {
		return strings.Contains(logs.String(), "first record does not look like a TLS handshake")
	})
}
