package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strings"
)

// fastResponse parses the common HTTP/1.1 response head without
// net/http's allocations: one string for the whole head, one header map,
// one array for the values. It accepts only a strict subset, entirely in
// br's buffer: "HTTP/1.1 NNN reason", well-formed header lines (no
// obs-fold, no control bytes), exactly one valid Content-Length, no
// Transfer-Encoding or Trailer, status 200-599 except 204 and 304, and not
// a HEAD request. For anything else it returns ok false and consumes
// nothing: http.ReadResponse then reads the response as before. err is
// the error of the first read (nothing arrived).
func fastResponse(br *bufio.Reader, req *http.Request, maxHead int) (resp *http.Response, ok bool, err error) {
	if req.Method == http.MethodHead {
		return nil, false, nil
	}
	if _, err := br.Peek(1); err != nil {
		return nil, false, err
	}
	b, _ := br.Peek(br.Buffered())
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 || end+4 > maxHead {
		return nil, false, nil
	}
	raw := b[:end+2] // the lines, each ending in CRLF
	// Status line.
	if len(raw) < 14 || string(raw[:9]) != "HTTP/1.1 " || !isDigit(raw[9]) || !isDigit(raw[10]) || !isDigit(raw[11]) {
		return nil, false, nil
	}
	code := int(raw[9]-'0')*100 + int(raw[10]-'0')*10 + int(raw[11]-'0')
	if code < 200 || code > 599 || code == 204 || code == 304 {
		return nil, false, nil
	}
	lineEnd := bytes.Index(raw, []byte("\r\n"))
	if raw[12] != '\r' && raw[12] != ' ' {
		return nil, false, nil
	}
	for _, c := range raw[12:lineEnd] {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, false, nil
		}
	}
	// Validate the header lines and count them before allocating.
	n := 0
	for rest := raw[lineEnd+2:]; len(rest) > 0; n++ {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i]
		rest = rest[i+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false, nil
		}
		for _, c := range line[:colon] {
			if !isTokenByte(c) {
				return nil, false, nil
			}
		}
		for _, c := range line[colon+1:] {
			if c < 0x20 && c != '\t' || c == 0x7f || c == '\r' || c == '\n' {
				return nil, false, nil
			}
		}
	}
	s := string(raw)
	h := make(http.Header, n)
	vals := make([]string, n)
	contentLength := int64(-1)
	closeConn := false
	rest := s[lineEnd+2:]
	for i := 0; len(rest) > 0; i++ {
		j := strings.Index(rest, "\r\n")
		line := rest[:j]
		rest = rest[j+2:]
		colon := strings.IndexByte(line, ':')
		key := textproto.CanonicalMIMEHeaderKey(line[:colon])
		val := textproto.TrimString(line[colon+1:])
		switch key {
		case "Transfer-Encoding", "Trailer", "Pragma": // Pragma: net/http may add Cache-Control
			return nil, false, nil
		case "Content-Length":
			if contentLength >= 0 {
				return nil, false, nil
			}
			v, good := parseLength(val)
			if !good {
				return nil, false, nil
			}
			contentLength = v
		case "Connection":
			if hasToken(val, "close") {
				closeConn = true
			}
		}
		if vv, dup := h[key]; dup {
			h[key] = append(vv[:len(vv):len(vv)], val)
			continue
		}
		vals[i] = val
		h[key] = vals[i : i+1 : i+1]
	}
	if contentLength < 0 {
		return nil, false, nil
	}
	if closeConn {
		delete(h, "Connection") // as net/http does: Close says it
	}
	_, _ = br.Discard(end + 4)
	resp = &http.Response{
		Status:        s[9:lineEnd],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: contentLength,
		Close:         closeConn,
		Request:       req,
	}
	resp.Status = strings.TrimSuffix(resp.Status, " ")
	if contentLength == 0 {
		resp.Body = http.NoBody
	} else {
		resp.Body = &lengthBody{br: br, left: contentLength}
	}
	return resp, true, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTokenByte reports whether c may appear in a header field name (RFC 9110 token).
func isTokenByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseLength parses a Content-Length value: digits only, at most 18 of them.
func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// hasToken reports whether the comma-separated list v holds token t (any case).
func hasToken(v, t string) bool {
	for v != "" {
		p, rest, _ := strings.Cut(v, ",")
		if strings.EqualFold(textproto.TrimString(p), t) {
			return true
		}
		v = rest
	}
	return false
}

// lengthBody reads a body of known length from the connection's reader;
// EOF comes with the last bytes, a short body is io.ErrUnexpectedEOF.
type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }
