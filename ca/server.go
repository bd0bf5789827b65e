package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/policy"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/meshguard/meshguard/internal/logkey"
)

// Defaults of Config.
const (
	DefaultListen    = "127.0.0.1:8443"
	DefaultSVIDTTL   = time.Hour
	DefaultRate      = 5.0 // issuance requests per second per caller
	DefaultBurst     = 50
	Backdate         = time.Minute // NotBefore of every SVID lies this far in the past (clock skew)
	MinSVIDTTL       = 10 * time.Second
	MaxSVIDTTL       = 30 * 24 * time.Hour
	maxRequestBody   = 64 << 10
	bodyReadTimeout  = 10 * time.Second
	shutdownTimeout  = 5 * time.Second
	bundleRefresh    = 5 * time.Minute
	serverCertMaxAge = 90 * 24 * time.Hour
)

// svidTemplate is the smallstep X.509 template for SPIFFE SVIDs: an empty
// subject and the SANs of the token (the SPIFFE ID), never anything from
// the CSR except its public key.
const svidTemplate = `{
	"subject": {},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth", "clientAuth"],
	"basicConstraints": {"isCA": false}
}`

// Config configures a Server.
type Config struct {
	// Dir is a CA directory written by Init.
	Dir string
	// Listen is the HTTPS address; its host goes into the server
	// certificate's SANs. Port 0 picks a free port (see Addr).
	Listen string
	// SVIDTTL is the lifetime of issued SVIDs (DefaultSVIDTTL when zero).
	SVIDTTL time.Duration
	// PasswordFile decrypts the keys when ca init encrypted them.
	PasswordFile string
	// ServerNames are extra DNS names or IPs for the server certificate.
	ServerNames []string
	// Registry, when set, serves /v1/registry/ on the same listener; it
	// reads the caller's verified SVID from r.TLS.VerifiedChains.
	Registry http.Handler
	// TokenLedger, when set, records used token IDs for every replica of
	// the CA (in addition to the local database); see TokenLedger.
	TokenLedger TokenLedger
	// Rate and Burst bound issuance per caller (remote IP for /1.0/sign,
	// SPIFFE ID for renew/rekey). Zero means DefaultRate/DefaultBurst.
	Rate  float64
	Burst int
	// Logger receives JSON logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the CA's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock for rate limiting and verification; nil is time.Now.
	Now func() time.Time
}

// Server is a running CA: smallstep's authority and HTTP API behind
// meshguard's guards, plus /bundle and the registry API.
type Server struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	material  *Authority
	authority *authority.Authority
	handler   http.Handler
	roots     *x509.CertPool
	inters    *x509.CertPool
	limiter   *limiter
	metrics   *metrics
	bundle    []byte
	sans      serverSANs

	certMu   sync.Mutex
	cert     atomic.Pointer[serverCert]
	sniCerts map[string]*serverCert // guarded by certMu

	started   atomic.Bool
	ready     chan struct{}
	addr      net.Addr
	closeOnce sync.Once
	closeErr  error
}

// NewServer loads the CA directory and opens the authority (and its bbolt
// database). Problems with the directory, password or flags are returned
// as *ConfigError. Call Run to serve, or Close to release the database
// without serving.
func NewServer(cfg Config) (*Server, error) {
	sans, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	m, err := LoadAuthority(cfg.Dir, cfg.PasswordFile)
	if err != nil {
		return nil, err
	}
	for _, c := range []*x509.Certificate{m.Root, m.Intermediate} {
		if t := now(); t.After(c.NotAfter) || t.Before(c.NotBefore) {
			return nil, configErrorf("ca server: %q is valid only from %s to %s; issue a new CA with `meshguard ca init --force`",
				c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if left := m.Intermediate.NotAfter.Sub(now()); left < 30*24*time.Hour {
		logger.Warn("the CA intermediate expires soon; SVIDs cannot outlive it", slog.Time(logkey.Expiry, m.Intermediate.NotAfter))
	}
	bundle := spiffebundle.FromX509Authorities(m.TrustDomain, []*x509.Certificate{m.Root})
	bundle.SetRefreshHint(bundleRefresh)
	bundleJSON, err := bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("ca server: marshal bundle: %w", err)
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ca server: %w", err)
	}
	a, err := newAuthority(cfg, m, sans)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       logger.With(slog.String(logkey.Component, "ca")),
		now:       now,
		material:  m,
		authority: a,
		roots:     x509.NewCertPool(),
		inters:    x509.NewCertPool(),
		limiter:   newLimiter(cfg.Rate, cfg.Burst, now),
		metrics:   met,
		bundle:    bundleJSON,
		sans:      sans,
		sniCerts:  map[string]*serverCert{},
		ready:     make(chan struct{}),
	}
	s.roots.AddCert(m.Root)
	s.inters.AddCert(m.Intermediate)
	s.handler = s.routes()
	return s, nil
}

// Check validates cfg and the CA directory without opening or writing
// anything, so that a caller can refuse bad input before it creates state
// (NewServer runs the same checks). Failures are *ConfigError.
func (cfg Config) Check() error {
	if _, err := cfg.normalize(); err != nil {
		return err
	}
	_, err := LoadAuthority(cfg.Dir, cfg.PasswordFile)
	return err
}

// normalize fills defaults, checks ranges and derives the server SANs.
func (cfg *Config) normalize() (serverSANs, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.SVIDTTL == 0 {
		cfg.SVIDTTL = DefaultSVIDTTL
	}
	if cfg.SVIDTTL < MinSVIDTTL || cfg.SVIDTTL > MaxSVIDTTL {
		return serverSANs{}, configErrorf("ca server: svid ttl %s out of range [%s, %s]", cfg.SVIDTTL, MinSVIDTTL, MaxSVIDTTL)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	sans, err := parseServerSANs(cfg.Listen, cfg.ServerNames)
	if err != nil {
		return serverSANs{}, &ConfigError{Err: fmt.Errorf("ca server: %w", err)}
	}
	return sans, nil
}

// newAuthority embeds smallstep's authority: our root and intermediate
// signer, one JWK provisioner with the SVID template, an X.509 name policy
// allowing only URIs of the trust domain, and the bbolt database in the CA
// directory (so used token IDs survive restarts; issued certificates are
// not stored, see usedTokensOnly).
func newAuthority(cfg Config, m *Authority, sans serverSANs) (*authority.Authority, error) {
	minTTL := min(cfg.SVIDTTL, 5*time.Minute)
	no := false
	prov := &provisioner.JWK{
		Type: provisioner.TypeJWK.String(),
		Name: ProvisionerName,
		Key:  m.Provisioner,
		Claims: &provisioner.Claims{
			MinTLSDur:               &provisioner.Duration{Duration: minTTL},
			MaxTLSDur:               &provisioner.Duration{Duration: cfg.SVIDTTL},
			DefaultTLSDur:           &provisioner.Duration{Duration: cfg.SVIDTTL},
			EnableSSHCA:             &no,
			DisableRenewal:          &no,
			AllowRenewalAfterExpiry: &no,
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: svidTemplate}},
	}
	authDB, err := db.New(&db.Config{Type: "bbolt", DataSource: filepath.Join(cfg.Dir, DBFile)})
	if err != nil {
		return nil, fmt.Errorf("ca server: open %s: %w", filepath.Join(cfg.Dir, DBFile), err)
	}
	conf := &config.Config{
		Address:  cfg.Listen,
		DNSNames: sans.names(),
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{prov},
			// Tokens are minted offline, possibly before this process
			// started; replay protection is the bbolt record of used IDs.
			DisableIssuedAtCheck: true,
			Backdate:             &provisioner.Duration{Duration: Backdate},
			Policy: &policy.Options{X509: &policy.X509PolicyOptions{
				AllowedNames: &policy.X509NameOptions{URIDomains: []string{m.TrustDomain.Name()}},
			}},
		},
	}
	a, err := authority.NewEmbedded(
		authority.WithConfig(conf),
		authority.WithDatabase(usedTokensOnly{authDB}),
		authority.WithX509RootCerts(m.Root),
		authority.WithX509SignerChain([]*x509.Certificate{m.Intermediate}, m.Signer),
		authority.WithQuietInit(),
	)
	if err != nil {
		_ = authDB.Shutdown()
		return nil, fmt.Errorf("ca server: start authority: %w", err)
	}
	return a, nil
}

// usedTokensOnly is smallstep's database without its certificate storage:
// it keeps used token IDs (replay protection) and revocation lookups, but
// hides StoreCertificate, so the database does not grow by one record per
// rotation forever. Every issuance is logged (serial, SPIFFE ID, expiry)
// instead.
type usedTokensOnly struct{ db.AuthDB }

// stepEndpoints are the smallstep API routes we serve, at / and /1.0, as
// step-ca does. Revocation, CRL and SSH endpoints are not served.
var stepEndpoints = map[string]bool{
	"GET /version": true, "GET /health": true, "GET /root/{sha}": true,
	"POST /sign": true, "POST /renew": true, "POST /rekey": true,
	"GET /roots": true, "GET /roots.pem": true,
	"GET /intermediates": true, "GET /intermediates.pem": true,
	"GET /federation": true, "GET /provisioners": true,
}

// stepRouter adapts chi to smallstep's api.Router, keeping only
// stepEndpoints and putting our guards in front of the issuing ones.
type stepRouter struct {
	r      chi.Router
	prefix string
	s      *Server
}

func (sr stepRouter) MethodFunc(method, pattern string, h http.HandlerFunc) {
	if !stepEndpoints[method+" "+pattern] {
		return
	}
	switch pattern {
	case "/sign":
		h = sr.s.guardSign(h)
	case "/renew":
		h = sr.s.guardRenew(h, methodRenew)
	case "/rekey":
		h = sr.s.guardRenew(h, methodRekey)
	}
	sr.r.MethodFunc(method, sr.prefix+pattern, h)
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			req.Body = http.MaxBytesReader(w, req.Body, maxRequestBody)
			next.ServeHTTP(w, req.WithContext(authority.NewContext(req.Context(), s.authority)))
		})
	})
	api.Route(stepRouter{r: r, s: s})
	api.Route(stepRouter{r: r, prefix: "/1.0", s: s})
	r.Get("/bundle", s.serveBundle)
	if s.cfg.Registry != nil {
		r.Handle("/v1/registry/*", s.cfg.Registry)
		r.Handle("/v1/registry", s.cfg.Registry)
	}
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

// serveBundle answers GET /bundle with the SPIFFE trust bundle (JWKS).
func (s *Server) serveBundle(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", int(bundleRefresh.Seconds())))
	_, _ = w.Write(s.bundle)
}

// Handler returns the CA's HTTP handler (for tests that bring their own
// listener; it expects TLS connection state for renew and rekey).
func (s *Server) Handler() http.Handler { return s.handler }

// TrustDomain is the CA's trust domain.
func (s *Server) TrustDomain() string { return s.material.TrustDomain.Name() }

// Root is the CA's root certificate.
func (s *Server) Root() *x509.Certificate { return s.material.Root }

// Ready is closed once the server listens; Addr is valid from then on.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound address, or nil before Ready is closed.
func (s *Server) Addr() net.Addr {
	select {
	case <-s.ready:
		return s.addr
	default:
		return nil
	}
}

// TLSConfig is the server's TLS configuration: TLS 1.3, the server
// certificate minted from the intermediate, and client certificates
// requested but not required (sign has none; renew, rekey and the registry
// use the caller's SVID, verified against the root).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.serverCertFor,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      s.roots,
		NextProtos:     []string{"h2", "http/1.1"},
		Time:           s.now,
	}
}

// Run serves HTTPS until ctx is done, then shuts down gracefully (open
// requests get a few seconds) and closes the authority's database.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ca server: already running")
	}
	defer s.Close()
	if _, err := s.serverCertificate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ca server: listen: %w", err)
	}
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	s.addr = ln.Addr()
	close(s.ready)
	s.log.Info("ca serving", slog.String(logkey.Addr, s.addr.String()),
		slog.String("trust_domain", s.TrustDomain()), slog.String("root_fingerprint", Fingerprint(s.material.Root)))

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("ca server: serve: %w", err)
	case <-ctx.Done():
	}
	// Long-lived requests (registry watches) end with the base context.
	cancelBase()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// Close releases the authority and its database. Run calls it on return;
// call it yourself only when Run is never called. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if err := s.authority.Shutdown(); err != nil {
			s.closeErr = fmt.Errorf("ca server: close authority: %w", err)
		}
	})
	return s.closeErr
}
