package edge

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/proxy"
)

// Config configures the edge handler.
type Config struct {
	// Exposure is the allow-list of public prefixes (required).
	Exposure *Exposure
	// Default limits every exposed route without a limiter of its own; nil
	// means no limit.
	Default *Limiter
	// RateKeyHeader, if set, keys rate limits by this request header (an API
	// key); requests without it are keyed by client IP.
	RateKeyHeader string
	// Next receives the sanitized, rewritten request: the agent's outbound
	// proxy, which routes it by path to a mesh service with the edge's SVID.
	Next http.Handler
	// Metrics (required) and Logger (nil: discard).
	Metrics *Metrics
	Logger  *slog.Logger
}

// Handler is the edge's public HTTP handler.
type Handler struct {
	cfg Config
}

// NewHandler checks cfg and returns the handler.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Exposure == nil || cfg.Next == nil || cfg.Metrics == nil {
		return nil, fmt.Errorf("edge handler: Exposure, Next and Metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RateKeyHeader != "" {
		cfg.RateKeyHeader = http.CanonicalHeaderKey(cfg.RateKeyHeader)
	}
	return &Handler{cfg: cfg}, nil
}

// unexposed is the metrics label for requests outside every exposed prefix.
const unexposed = "-"

// ServeHTTP normalizes the path, refuses what is not exposed (404) or over
// its rate (429), strips mesh identity headers, records the client in
// X-Forwarded-For and Forwarded, rewrites the prefix and hands the request
// to the mesh. The outside's Host header never chooses the service: the
// mesh routes the rewritten path by its registered route prefixes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, rawQuery, err := proxy.NormalizePath(r.RequestURI)
	if err != nil {
		h.refuse(w, unexposed, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	route := h.cfg.Exposure.Route(path)
	if route == nil {
		h.refuse(w, unexposed, http.StatusNotFound, "not found", "")
		return
	}
	limiter := route.Limiter
	if limiter == nil {
		limiter = h.cfg.Default
	}
	if limiter != nil {
		if ok, retry := limiter.Allow(h.clientKey(r)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
			h.cfg.Metrics.limited.WithLabelValues(route.Prefix).Inc()
			h.refuse(w, route.Prefix, http.StatusTooManyRequests, "too many requests", "")
			return
		}
	}
	// The edge owns r: a shallow copy (its header map edited in place)
	// instead of r.Clone's deep copy of every header.
	out := new(http.Request)
	*out = *r
	u := *r.URL
	out.URL = &u
	SanitizeOutside(out.Header)
	proto := "http"
	if proxy.TLSState(r) != nil {
		proto = "https"
	}
	AppendForwarded(out.Header, r.RemoteAddr, proto, r.Host)
	meshPath := route.Rewrite(path)
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = meshPath, "", rawQuery
	out.URL.Host, out.Host = "", ""
	out.RequestURI = meshPath
	if rawQuery != "" {
		out.RequestURI += "?" + rawQuery
	}
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	h.cfg.Next.ServeHTTP(sw, out)
	h.cfg.Metrics.count(route.Prefix, sw.code)
}

// clientKey is the rate-limit key: the API key header when configured and
// present, else the client IP (never a forwarded header: the outside could
// forge one per request to escape its limit).
func (h *Handler) clientKey(r *http.Request) string {
	if h.cfg.RateKeyHeader != "" {
		if v := r.Header.Get(h.cfg.RateKeyHeader); v != "" {
			return "key:" + v
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}

func (h *Handler) refuse(w http.ResponseWriter, prefix string, code int, msg, detail string) {
	h.cfg.Metrics.count(prefix, code)
	body := map[string]string{"error": msg}
	if detail != "" {
		body["detail"] = detail
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// statusWriter records the status code; Unwrap keeps http.ResponseController
// (flushes, deadlines) working through it for streamed responses.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader && code >= 200 {
		s.code, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Metrics are the edge's Prometheus metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	limited  *prometheus.CounterVec
	// counters caches requests' children: WithLabelValues hashes both
	// labels, formats the code and takes the vector's lock on every call.
	counters sync.Map // requestLabels -> prometheus.Counter
}

type requestLabels struct {
	prefix string
	code   int
}

// count adds one request of prefix answered with code.
func (m *Metrics) count(prefix string, code int) {
	k := requestLabels{prefix, code}
	if c, ok := m.counters.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := m.counters.LoadOrStore(k, m.requests.WithLabelValues(prefix, strconv.Itoa(code)))
	c.(prometheus.Counter).Inc()
}

// NewMetrics registers meshguard_edge_requests_total{prefix,code} and
// meshguard_edge_rate_limited_total{prefix} on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_edge_requests_total",
			Help: "Requests on the edge's public listener, by exposed prefix (\"-\" for none) and status code.",
		}, []string{"prefix", "code"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_edge_rate_limited_total",
			Help: "Requests refused with 429 by the edge's rate limits, by exposed prefix.",
		}, []string{"prefix"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.limited} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("edge metrics: %w", err)
			}
		}
	}
	return m, nil
}
