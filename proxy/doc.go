// Package proxy is meshguard's data plane.
//
// Inbound (NewInbound): terminates mTLS from peers (TLS 1.3 only, ALPN h2
// and http/1.1, the agent's live SVID and bundle read at every handshake,
// go-spiffe's trust-domain membership plus internal/svidcheck's strict SVID
// rules); per request it re-checks the peer when the bundle changed or its
// certificate expired, refuses ambiguous HTTP/1.1 framing (Content-Length
// with Transfer-Encoding), normalizes the path (NormalizePath; 400 on
// ambiguity), strips hop-by-hop and X-Forwarded-Client-Cert headers, builds
// the authz.Input from the verified peer, asks the Authorizer, and answers
// 403 JSON or forwards to the app (HTTP/1.1 keep-alive pool, or h2c) with
// X-Forwarded-Client-Cert set, streaming bodies and trailers.
//
// Outbound (NewOutbound): plaintext HTTP/1.1 and h2c (prior knowledge, never
// "Upgrade: h2c") from the local app; the service comes from Host ("users",
// "users.mesh", any port) or the longest route prefix (Peers); one pooled
// HTTP/2 connection per endpoint with exactly the service's SPIFFE ID
// authorized; power-of-two-choices over peak-EWMA latency × in-flight,
// weighted split by the "version" label, passive outlier ejection with
// growing ejection time, retries of idempotent requests that were never
// sent, within a Linkerd-style retry budget; per-request timeout.
//
// The pool's connections are internal/h2client Conns (not net/http's
// Transport): draining on rotation needs a graceful Shutdown,
// SetDoNotReuse and State, which net/http lacks, and x/net's ClientConn,
// which has them, costs a goroutine and a syscall per request. Concurrency
// per endpoint is capped by the pool's own semaphore; the server's stream
// limit is only a ceiling (x/net's strict mode can deadlock, golang/go#70809). Connections are renewed
// before the SVIDs they were opened with expire, and drained when the bundle
// no longer verifies their peer; in-flight requests finish.
//
// The listeners sort connections themselves (connListener): the inbound
// one does the TLS handshake, the outbound and public ones peek at the first
// bytes; HTTP/2 (ALPN h2, or the h2c preface) goes to internal/h2server,
// HTTP/1.1 to net/http's server. h2server replaces net/http's HTTP/2 server
// for speed (no serve-loop round trip per handler write; the frames of
// concurrent streams share syscalls through internal/h2write) and keeps its
// protections: the rapid-reset bound (ENHANCE_YOUR_CALM), the CONTINUATION
// cutoff, header-list limit (431), connection-specific headers refused.
// Public (NewPublic) is the same connection handling for outside clients
// (the edge), where handlers read TLSState instead of r.TLS.
//
// The inbound's HTTP/1.1 client to the app is h1Client, not net/http's
// Transport: one fixed address, and the exchange runs on the request's
// goroutine (only a request body is written from a second one), where
// Transport hands every request to a per-connection write loop and read
// loop. Requests are still written by net/http (Request.Write) and
// responses parsed by it (ReadResponse). h2c apps use the Transport.
//
// Usage sketch (package main wires it):
//
//	m, _ := proxy.NewMetrics(reg)
//	in, _ := proxy.NewInbound(proxy.InboundConfig{Listener: inLn, App: "127.0.0.1:8080",
//		Service: "users", Source: src, Authorizer: engine, Metrics: m, Logger: log})
//	out, _ := proxy.NewOutbound(proxy.OutboundConfig{Listener: outLn,
//		Source: src, Peers: peers, Metrics: m, Logger: log})
//	g.Go(func() error { return in.Run(ctx) })
//	g.Go(func() error { return out.Run(ctx) })
//
// The identity source, the authorizer and the peer table are small
// interfaces declared here (Source, Authorizer, Peers); the static
// `--peer SERVICE=SPIFFE_ID@HOST:PORT` form is ParsePeer and StaticPeers.
//
// proxy may import identity, authz and registry (and internal/*), never ca or
// package main; today it imports only authz (for the Input and Decision
// types) and internal/svidcheck.
package proxy
