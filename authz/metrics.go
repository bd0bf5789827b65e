package authz

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the decision label of meshguard_authz_decisions_total. A
// dry-run engine counts what it would have done apart from what it does, so
// that dashboards of real denials stay true while a policy is trialled.
const (
	labelAllow        = "allow"
	labelDeny         = "deny"
	labelError        = "error"
	labelDryRunDeny   = "dry_run_deny"
	labelDryRunError  = "dry_run_error"
	labelReloadOK     = "success"
	labelReloadFailed = "error"
)

type engineMetrics struct {
	decisions    *prometheus.CounterVec
	byDecision   map[string]prometheus.Counter // resolved once: no label hashing per request
	evalDuration prometheus.Histogram
	cacheHits    prometheus.Counter
	reloads      *prometheus.CounterVec
	revision     *prometheus.GaugeVec
}

func newEngineMetrics(reg prometheus.Registerer) (*engineMetrics, error) {
	m := &engineMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_authz_decisions_total",
			Help: "Authorization decisions by outcome: allow, deny, error (policy error, denied), dry_run_deny and dry_run_error (would have denied; allowed by --dry-run).",
		}, []string{"decision"}),
		evalDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshguard_authz_eval_duration_seconds",
			Help:    "Time spent evaluating the policy for one decision (cache hits excluded).",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 10), // 5µs .. ~1.3s
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_decision_cache_hits_total",
			Help: "Decisions answered from the decision cache.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_policy_reloads_total",
			Help: "Policy revisions loaded (result=success) or refused (result=error: parse, compile or test failure).",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshguard_policy_revision_info",
			Help: "The policy revision in force (content hash), as a label; value 1. Absent while no policy is loaded.",
		}, []string{"revision"}),
	}
	m.byDecision = map[string]prometheus.Counter{}
	for _, l := range []string{labelAllow, labelDeny, labelError, labelDryRunDeny, labelDryRunError} {
		m.byDecision[l] = m.decisions.WithLabelValues(l)
	}
	for _, l := range []string{labelReloadOK, labelReloadFailed} {
		m.reloads.WithLabelValues(l)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.evalDuration, m.cacheHits, m.reloads, m.revision} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering authz metrics: %w", err)
		}
	}
	return m, nil
}
