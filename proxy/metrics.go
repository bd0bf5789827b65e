package proxy

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Direction label values.
const (
	dirInbound  = "inbound"
	dirOutbound = "outbound"
)

// Metrics are the data plane's Prometheus series (DESIGN.md names). One
// Metrics is shared by the inbound and outbound sides of an agent.
type Metrics struct {
	handshakes  *prometheus.CounterVec
	upstreams   prometheus.Gauge
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	hsIn, hsOut prometheus.Counter
	durIn       prometheus.Observer
	durOut      prometheus.Observer

	mu       sync.RWMutex
	reqCache map[reqKey]prometheus.Counter
}

type reqKey struct {
	dir, service string
	code         int
}

// NewMetrics creates and registers the data plane metrics on reg. A nil reg
// registers nothing (tests, benchmarks).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_tls_handshakes_total",
			Help: "Completed mTLS handshakes, by direction (inbound: accepted from peers; outbound: dialled to peers).",
		}, []string{"direction"}),
		upstreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_upstream_connections",
			Help: "Open pooled HTTP/2 connections to peer endpoints.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_requests_total",
			Help: "Requests by direction, remote service (outbound: the called service; inbound: the calling service) and status code.",
		}, []string{"direction", "service", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshguard_request_duration_seconds",
			Help:    "Time from request headers to the end of the response, by direction.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction"}),
		reqCache: make(map[reqKey]prometheus.Counter),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.handshakes, m.upstreams, m.requests, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register proxy metrics: %w", err)
			}
		}
	}
	m.hsIn = m.handshakes.WithLabelValues(dirInbound)
	m.hsOut = m.handshakes.WithLabelValues(dirOutbound)
	m.durIn = m.duration.WithLabelValues(dirInbound)
	m.durOut = m.duration.WithLabelValues(dirOutbound)
	return m, nil
}

func (m *Metrics) request(dir, service string, code int, seconds float64) {
	k := reqKey{dir, service, code}
	m.mu.RLock()
	c, ok := m.reqCache[k]
	m.mu.RUnlock()
	if !ok {
		c = m.requests.WithLabelValues(dir, service, strconv.Itoa(code))
		m.mu.Lock()
		m.reqCache[k] = c
		m.mu.Unlock()
	}
	c.Inc()
	if dir == dirInbound {
		m.durIn.Observe(seconds)
	} else {
		m.durOut.Observe(seconds)
	}
}
