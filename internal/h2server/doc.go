// Package h2server is meshguard's HTTP/2 server for the data plane's hot
// path: the inbound listener's mTLS connections that negotiated h2, and the
// outbound listener's h2c (prior knowledge) connections from the local app.
//
// Why not net/http's HTTP/2 server: it runs every connection through one
// serve-loop goroutine that every handler write must visit and wait for
// (handler → serve loop → a goroutine per flush → serve loop → handler),
// which under 64 concurrent streams costs more CPU than the proxying itself.
// Here the goroutine reading the connection decodes frames and starts one
// goroutine per request; handlers encode and write their own frames under
// the connection's write lock (internal/h2write: the frames of concurrent
// streams leave together in one syscall, sent by one of the handlers, with
// no writer goroutine). A small response is one lock, one HEADERS and one
// DATA frame.
//
// The frame layer is golang.org/x/net/http2's Framer (frame parsing and
// ordering, HPACK, the header list limit and its CONTINUATION-flood cutoff);
// what is here is the HTTP/2 connection and stream rules (RFC 9113):
// stream states and IDs, flow control in both directions (internal/h2flow,
// shared with the client), SETTINGS, PING,
// RST_STREAM, GOAWAY and graceful shutdown, idle and keepalive timeouts, and
// the protections net/http has: at most MaxConcurrentStreams handlers run at
// once per connection and a client that opens and resets streams faster
// than they finish is cut off with ENHANCE_YOUR_CALM (CVE-2023-44487);
// requests are refused that carry connection-specific headers, a bad
// :path, a bad content-length or a host that contradicts :authority;
// header lists past MaxHeaderBytes get 431.
//
// With Config.RequestTimeout every request's context has a deadline of at
// least the timeout and at most 1/16 more: streams opened within one slot
// share a parent context (one timer per slot, not per request).
//
// Handlers get a standard *http.Request (Proto "HTTP/2.0", RequestURI is
// :path as sent, Host is :authority) and an http.ResponseWriter that also
// implements http.Flusher; response trailers work as in net/http (declared
// with the Trailer header, or with the http.TrailerPrefix). Setting
// "Connection: close" on a response starts a graceful GOAWAY, as net/http
// does. Informational (1xx) responses are not sent.
package h2server
