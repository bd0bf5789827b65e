// Package proxy is meshguard's data plane: the inbound listener that
// terminates mTLS from peers, normalizes the path, asks the authorizer and
// forwards allowed requests to the local app; and the outbound listener that
// takes plaintext HTTP/1.1 or h2c from the local app, routes it to a service,
// balances over that service's endpoints and originates mTLS over one pooled
// HTTP/2 connection per endpoint.
//
// Usage sketch (package main wires it):
//
//	m, _ := proxy.NewMetrics(reg)
//	in, _ := proxy.NewInbound(proxy.InboundConfig{Addr: ":15443", App: "127.0.0.1:8080",
//		Service: "users", Source: src, Authorizer: engine, Metrics: m, Logger: log})
//	out, _ := proxy.NewOutbound(proxy.OutboundConfig{Addr: "127.0.0.1:15001",
//		Source: src, Peers: peers, Metrics: m, Logger: log})
//	g.Go(func() error { return in.Run(ctx) })
//	g.Go(func() error { return out.Run(ctx) })
//
// The identity source, the authorizer and the peer table are small
// interfaces declared here (Source, Authorizer, Peers); the static
// `--peer SERVICE=SPIFFE_ID@HOST:PORT` form is ParsePeer and StaticPeers.
//
// proxy may import identity, authz and registry (and internal/*), never ca or
// package main.
package proxy
