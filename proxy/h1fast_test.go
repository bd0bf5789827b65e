package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestFastResponse: the fast parser either reads a response exactly as
// http.ReadResponse does (status, header, length, Close, body, and what
// is left on the connection), or declines and consumes nothing.
func TestFastResponse(t *testing.T) {
	get := &http.Request{Method: "GET"}
	head := &http.Request{Method: "HEAD"}
	tests := []struct {
		name string
		raw  string
		req  *http.Request
		fast bool
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n", get, true},
		{"nginx style", "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n", get, true},
		{"close", "HTTP/1.1 503 Service Unavailable\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n", get, true},
		{"lowercase names, repeated key, OWS", "HTTP/1.1 404 Not Found\r\ncontent-length:  2 \r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nx-empty:\r\n\r\nno", get, true},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", get, true},
		{"pipelined bytes stay", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n", get, true},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", get, false},
		{"no length", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nxyz", get, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", get, false},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\nx", get, false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", get, false},
		{"no colon", "HTTP/1.1 200 OK\r\nbogus\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"control byte in value", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\nx", get, false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", get, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", get, false},
		{"100", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"pragma", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\nx", get, false},
		{"incomplete head", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", get, false},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\nx", get, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.raw))
			resp, fast, err := fastResponse(br, tc.req, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if fast != tc.fast {
				t.Fatalf("fast = %v, want %v", fast, tc.fast)
			}
			if !fast {
				if left, _ := io.ReadAll(br); string(left) != tc.raw {
					t.Fatalf("declined but consumed %d bytes", len(tc.raw)-len(left))
				}
				return
			}
			want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.raw)), tc.req)
			if err != nil {
				t.Fatalf("net/http refuses what the fast path accepted: %v", err)
			}
			if resp.StatusCode != want.StatusCode || resp.Status != want.Status || resp.ContentLength != want.ContentLength || resp.Close != want.Close {
				t.Fatalf("got %d %q len %d close %v, want %d %q len %d close %v", resp.StatusCode, resp.Status, resp.ContentLength, resp.Close,
					want.StatusCode, want.Status, want.ContentLength, want.Close)
			}
			if fmt.Sprint(resp.Header) != fmt.Sprint(want.Header) {
				t.Fatalf("header %v, want %v", resp.Header, want.Header)
			}
			gotBody, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			wantBody, _ := io.ReadAll(want.Body)
			if string(gotBody) != string(wantBody) {
				t.Fatalf("body %q, want %q", gotBody, wantBody)
			}
			rest, _ := io.ReadAll(br)
			if tc.name == "pipelined bytes stay" && string(rest) != "HTTP/1.1 200 OK\r\n" {
				t.Fatalf("left on the connection: %q", rest)
			}
		})
	}
}

// TestFastResponseShortBody: a connection that ends inside the body is
// an unexpected EOF, not a short success.
func TestFastResponseShortBody(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
	resp, fast, err := fastResponse(br, &http.Request{Method: "GET"}, 64<<10)
	if err != nil || !fast {
		t.Fatalf("fast %v, err %v", fast, err)
	}
	if b, err := io.ReadAll(resp.Body); err != io.ErrUnexpectedEOF || string(b) != "abc" {
		t.Fatalf("read %q, %v; want \"abc\", io.ErrUnexpectedEOF", b, err)
	}
}
