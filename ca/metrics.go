package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the CA's counters. A nil *metrics counts nothing.
type metrics struct {
	issuedTotal  *prometheus.CounterVec
	refusedTotal *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		issuedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_ca_certificates_issued_total",
			Help: "SVIDs issued by the CA, by method (sign, renew, rekey).",
		}, []string{"method"}),
		refusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_ca_requests_refused_total",
			Help: "Certificate requests the CA refused, by method and reason.",
		}, []string{"method", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.issuedTotal, m.refusedTotal} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) issued(method string) {
	if m != nil {
		m.issuedTotal.WithLabelValues(method).Inc()
	}
}

func (m *metrics) refused(method, reason string) {
	if m != nil {
		m.refusedTotal.WithLabelValues(method, reason).Inc()
	}
}
