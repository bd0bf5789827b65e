package proxy

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// forwarder streams one request to the next hop and its response back. It
// replaces httputil.ReverseProxy on meshguard's hot path: the handler
// already owns and sanitized the request (hop-by-hop headers stripped, path
// normalized), so the outgoing request shares its header map instead of
// cloning it, no client trace or extra context is allocated, and copy
// buffers come from a bounded pool. Semantics kept from ReverseProxy:
// hop-by-hop response headers are dropped, trailers are announced and
// forwarded (gRPC), bodies of unknown length are flushed per write
// (streaming), and a broken upstream body aborts the response
// (http.ErrAbortHandler) rather than ending it cleanly. Informational (1xx)
// responses are not relayed.
type forwarder struct {
	rt      http.RoundTripper
	bufs    bufferPool
	scheme  string
	host    string // fixed next hop (inbound: the app); "" = keep r.URL.Host
	onError func(w http.ResponseWriter, r *http.Request, err error)
}

var emptyUA = []string{""}

// errUpstreamBody marks a failure reading the upstream response body.
var errUpstreamBody = errors.New("read upstream body")

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The outgoing request and its URL in one allocation.
	pair := new(struct {
		req http.Request
		url url.URL
	})
	out, u := &pair.req, &pair.url
	*out = *r
	*u = url.URL{Scheme: f.scheme, Host: f.host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if u.Host == "" {
		u.Host = r.URL.Host
	}
	out.URL = u
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = emptyUA // not Go's default
	}
	res, err := f.rt.RoundTrip(out)
	if err != nil {
		f.onError(w, out, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		f.onError(w, out, errors.New("upstream switched protocols; upgrades are not supported"))
		return
	}
	stripHopByHop(res.Header)
	if !adoptHeader(w, res.Header) {
		h := w.Header()
		for k, vv := range res.Header {
			h[k] = vv
		}
	}
	h := w.Header()
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(res.StatusCode)
	if err := f.copyBody(w, res); err != nil {
		res.Body.Close()
		if errors.Is(err, errUpstreamBody) {
			// Abort so the caller sees a broken response, not a short one.
			panic(http.ErrAbortHandler)
		}
		return // the caller went away
	}
	res.Body.Close() // populates res.Trailer
	if len(res.Trailer) == 0 {
		return
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			h[k] = vv
		}
		return
	}
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// headerAdopter is a ResponseWriter that can take over a whole header map
// (internal/h2server's).
type headerAdopter interface {
	AdoptHeader(http.Header) bool
}

// adoptHeader hands h to w, or to the writer w wraps, as its response
// header map when that writer supports it, saving a copy per response. h
// must not be used afterwards except through w.Header().
func adoptHeader(w http.ResponseWriter, h http.Header) bool {
	for {
		if a, ok := w.(headerAdopter); ok {
			return a.AdoptHeader(h)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// copyBody streams the response body; bodies of unknown length (streams,
// gRPC) are flushed after every write.
func (f *forwarder) copyBody(w http.ResponseWriter, res *http.Response) error {
	flush := res.ContentLength < 0
	fl, _ := w.(http.Flusher)
	buf := f.bufs.Get()
	defer f.bufs.Put(buf)
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush && fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			if len(res.Trailer) > 0 && fl != nil {
				fl.Flush() // force chunking so trailers can follow
			}
			return nil
		}
		if rerr != nil {
			return errors.Join(errUpstreamBody, rerr)
		}
	}
}
