package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/proxy"
	"github.com/meshguard/meshguard/proxy/edge"
)

// edgeFlags are the flags `meshguard edge` adds to the agent's.
type edgeFlags struct {
	listen         string
	tlsCert        string
	tlsKey         string
	insecure       bool
	expose         stringList
	rewrite        stringList
	rate           stringList
	burst          stringList
	rateKeyHeader  string
	rateClients    int
	certReloadFreq time.Duration
}

func (f *edgeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", "0.0.0.0:8443", "public listener for outside clients (TLS unless --insecure-listen)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the public listener; reloaded when the file changes")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of the public listener")
	fs.BoolVar(&f.insecure, "insecure-listen", false, "serve the public listener in plaintext (HTTP/1.1 and h2c): only behind a TLS-terminating load balancer")
	fs.Var(&f.expose, "expose", "route prefix exposed to the outside (repeatable); everything else is 404")
	fs.Var(&f.rewrite, "rewrite", "FROM=TO prefix rewrite of an exposed prefix, e.g. /users=/user-service/users (repeatable)")
	fs.Var(&f.rate, "rate", "per-client rate limit, e.g. 100/s, or PREFIX=RATE for one exposed prefix (repeatable)")
	fs.Var(&f.burst, "burst", "requests over the rate admitted at once (nginx burst=N nodelay), or PREFIX=N (repeatable)")
	fs.StringVar(&f.rateKeyHeader, "rate-key-header", "", "limit per value of this header (e.g. X-Api-Key) instead of per client IP when present")
	fs.IntVar(&f.rateClients, "rate-clients", edge.DefaultMaxClients, "clients remembered per rate limit (least recently seen are forgotten)")
	fs.DurationVar(&f.certReloadFreq, "tls-reload-interval", 5*time.Second, "how often the TLS files are checked for changes")
}

// cmdEdge runs an edge agent: a full mesh agent plus a public listener that
// exposes only the listed prefixes, rate-limits each client and forwards
// into the mesh with the edge's own SVID through the agent's outbound path.
func cmdEdge(ctx context.Context, env *runEnv, args []string) error {
	var ef edgeFlags
	cfg, err := parseAgentConfig("edge", env, args, ef.register)
	if err != nil {
		return err
	}
	exposure, err := edge.NewExposure(ef.expose, ef.rewrite)
	if err != nil {
		return usagef("edge: %v", err)
	}
	def, err := edge.ApplyLimits(exposure, ef.rate, ef.burst, ef.rateClients, time.Now)
	if err != nil {
		return usagef("edge: %v", err)
	}
	if ef.certReloadFreq <= 0 {
		return usagef("edge: --tls-reload-interval must be positive")
	}
	var certs *edge.CertReloader
	switch {
	case ef.insecure && (ef.tlsCert != "" || ef.tlsKey != ""):
		return usagef("edge: give --tls-cert/--tls-key or --insecure-listen, not both")
	case !ef.insecure && (ef.tlsCert == "" || ef.tlsKey == ""):
		return usagef("edge: the public listener needs --tls-cert and --tls-key (or --insecure-listen behind a TLS load balancer)")
	case !ef.insecure:
		if certs, err = edge.LoadCertificate(ef.tlsCert, ef.tlsKey, env.logger); err != nil {
			return usagef("edge: %v", err)
		}
	}
	ln, err := net.Listen("tcp", ef.listen)
	if err != nil {
		return usagef("edge: --listen %s: %v", ef.listen, err)
	}
	part := &edgeListener{ln: ln, certs: certs, flags: &ef, exposure: exposure, def: def, requestTimeout: cfg.requestTimeout, log: env.logger}
	err = runAgent(ctx, env, cfg, func(dp *dataPlane, reg prometheus.Registerer) (agentPart, error) {
		m, err := edge.NewMetrics(reg)
		if err != nil {
			return nil, err
		}
		part.dp, part.metrics = dp, m
		return part, nil
	})
	ln.Close()
	return err
}

// edgeListener is the edge's public listener, run beside the agent.
type edgeListener struct {
	ln       net.Listener
	certs    *edge.CertReloader // nil with --insecure-listen
	flags    *edgeFlags
	exposure *edge.Exposure
	def      *edge.Limiter
	dp       *dataPlane
	metrics  *edge.Metrics
	// requestTimeout is the agent's --request-timeout, also the deadline
	// of the public HTTP/2 requests (the outbound path then adds none).
	requestTimeout time.Duration
	log            *slog.Logger
}

// Run serves outside clients once the agent's outbound path exists, until
// ctx is done, then drains for up to 10 seconds.
func (e *edgeListener) Run(ctx context.Context) error {
	out := e.dp.Outbound(ctx)
	if out == nil {
		return nil
	}
	h, err := edge.NewHandler(edge.Config{
		Exposure: e.exposure, Default: e.def, RateKeyHeader: e.flags.rateKeyHeader,
		Next: out, Metrics: e.metrics, Logger: e.log,
	})
	if err != nil {
		return err
	}
	pc := proxy.PublicConfig{
		Listener:          e.ln,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		RequestTimeout:    e.requestTimeout,
		Logger:            e.log,
	}
	if e.certs != nil {
		// TLS 1.2 is accepted here, on the outside listener only; between
		// agents it is 1.3.
		pc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: e.certs.GetCertificate}
		go e.certs.Run(ctx, e.flags.certReloadFreq)
	}
	pub, err := proxy.NewPublic(pc)
	if err != nil {
		return fmt.Errorf("edge listener: %w", err)
	}
	e.log.Info("edge listening", "addr", e.ln.Addr().String(), "tls", e.certs != nil, "exposed", e.flags.expose.String())
	if err := pub.Run(ctx); err != nil {
		return fmt.Errorf("edge listener: %w", err)
	}
	return nil
}
