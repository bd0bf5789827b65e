package proxy

import (
	"errors"
	"strings"
)

// Path normalization errors. Each makes the request a 400 before any policy
// runs: the path means different things to different parsers (the
// Istio/Envoy authorization-bypass CVE family).
var (
	ErrEncodedSlash     = errors.New("encoded slash (%2F) in path")
	ErrEncodedBackslash = errors.New("encoded backslash (%5C) in path")
	ErrBackslash        = errors.New("backslash in path")
	ErrNUL              = errors.New("NUL in path")
	ErrControl          = errors.New("control character in path")
	ErrInvalidEscape    = errors.New("invalid percent-escape in path")
	ErrFragment         = errors.New("fragment in request target")
	ErrRequestTarget    = errors.New("request target is not an absolute path")
)

// NormalizePath splits an HTTP request target (RequestURI: origin form
// "/p?q", or absolute form "http://host/p?q") into the normalized path and
// the raw query. The path is normalized per DESIGN.md: percent-escapes of
// unreserved characters are decoded, all other escapes kept with upper-case
// hex; '.' and '..' segments are resolved (never above the root); empty
// segments ("//") are merged; bytes that are not legal in a path are
// percent-encoded. %2F, %5C, %00, raw backslashes, raw control characters,
// invalid escapes and fragments are refused. The result is what the policy
// sees and, byte for byte, what the app receives.
func NormalizePath(target string) (path, rawQuery string, err error) {
	if target == "" || target[0] != '/' {
		target, err = originForm(target)
		if err != nil {
			return "", "", err
		}
	}
	if strings.IndexByte(target, '#') >= 0 {
		return "", "", ErrFragment
	}
	path = target
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, rawQuery = target[:i], target[i+1:]
	}
	if fastPath(path) {
		return path, rawQuery, nil
	}
	path, err = normalizeSlow(path)
	return path, rawQuery, err
}

// originForm turns an absolute-form target into origin form.
func originForm(target string) (string, error) {
	var rest string
	switch {
	case len(target) > 7 && strings.EqualFold(target[:7], "http://"):
		rest = target[7:]
	case len(target) > 8 && strings.EqualFold(target[:8], "https://"):
		rest = target[8:]
	default:
		return "", ErrRequestTarget
	}
	i := strings.IndexAny(rest, "/?#")
	switch {
	case i < 0:
		return "/", nil
	case rest[i] == '/':
		return rest[i:], nil
	default:
		return "/" + rest[i:], nil
	}
}

// fastPath reports whether path is already normal: only plain path
// characters, no escapes, no empty or dot segments.
func fastPath(path string) bool {
	prevSlash := false
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '/' {
			if prevSlash {
				return false
			}
			prevSlash = true
			continue
		}
		if c == '.' && prevSlash {
			// "/." starts a dot segment only if followed by '/', '.', or end.
			if i+1 == len(path) || path[i+1] == '/' || path[i+1] == '.' {
				return false
			}
		}
		prevSlash = false
		if pathChar[c] != charPlain {
			return false
		}
	}
	return true
}

const (
	charEncode = iota // not allowed raw in a path: percent-encode it
	charPlain         // unreserved, sub-delims, ':' '@'
	charRefuse        // backslash, control characters
)

var pathChar = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c < 0x20 || c == 0x7f || c == '\\':
			t[c] = charRefuse
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("-._~!$&'()*+,;=:@", byte(c)) >= 0:
			t[c] = charPlain
		default:
			t[c] = charEncode
		}
	}
	return t
}()

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

func normalizeSlow(path string) (string, error) {
	// Pass 1: canonical escaping, segment by segment.
	segs := make([]string, 0, 8)
	var b strings.Builder
	trailing := false
	flush := func() {
		s := b.String()
		b.Reset()
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
			trailing = false
			return
		}
		trailing = true
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			flush()
			trailing = true
		case c == '%':
			if i+2 >= len(path) {
				return "", ErrInvalidEscape
			}
			hi, ok1 := unhex(path[i+1])
			lo, ok2 := unhex(path[i+2])
			if !ok1 || !ok2 {
				return "", ErrInvalidEscape
			}
			d := hi<<4 | lo
			switch {
			case d == '/':
				return "", ErrEncodedSlash
			case d == '\\':
				return "", ErrEncodedBackslash
			case d == 0:
				return "", ErrNUL
			case unreserved(d):
				b.WriteByte(d)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		case c == 0:
			return "", ErrNUL
		case c == '\\':
			return "", ErrBackslash
		case pathChar[c] == charRefuse:
			return "", ErrControl
		case pathChar[c] == charPlain:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
		}
	}
	// The last flush decides: a final real segment clears trailing, a final
	// "/", "." or ".." sets it.
	if b.Len() > 0 {
		flush()
	}
	if len(segs) == 0 {
		return "/", nil
	}
	n := len(segs)
	for _, s := range segs {
		n += len(s)
	}
	if trailing {
		n++
	}
	var out strings.Builder
	out.Grow(n)
	for _, s := range segs {
		out.WriteByte('/')
		out.WriteString(s)
	}
	if trailing {
		out.WriteByte('/')
	}
	return out.String(), nil
}
