package authz

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/logkey"
)

// Audit record field names: DESIGN.md's audit contract.
const (
	auditDecisionID    = "decision_id"
	auditSourceID      = "source_id"
	auditDestinationID = "destination_id"
	auditService       = "service"
	auditMethod        = "method"
	auditPath          = "path"
	auditReasons       = "reasons"
	auditRevision      = "policy_revision"
	auditDryRun        = "dry_run"
	auditRemoteAddr    = "remote_addr"

	// MsgDenied and MsgAllowed are the msg of denial and (sampled) allow records.
	MsgDenied  = "request denied"
	MsgAllowed = "request allowed"
)

// DefaultAuditBuffer is the number of records an Auditor holds while its
// writer is busy; past it records are dropped and counted.
const DefaultAuditBuffer = 4096

// AuditConfig configures an Auditor.
type AuditConfig struct {
	// Buffer is the number of records held while the writer is busy
	// (default DefaultAuditBuffer).
	Buffer int
	// AllowedRate is the fraction of allowed requests also written
	// (--audit-allowed, 0..1). Denials are always written.
	AllowedRate float64
	// Registerer gets meshguard_audit_dropped_total. Nil: not registered.
	Registerer prometheus.Registerer
	// Logger gets write failures of the audit sink. Nil: discarded.
	Logger *slog.Logger
	// Now stamps records (default time.Now).
	Now func() time.Time
	// Sample returns a number in [0, 1) to sample allows (default math/rand/v2).
	Sample func() float64
}

// Auditor writes audit records as JSON lines (log/slog) to a sink. The
// request path only puts records in a bounded buffer and never waits: when
// the buffer is full the record is dropped and meshguard_audit_dropped_total
// counts it. Run does the writing and, when its context ends, writes
// everything still buffered before it returns.
type Auditor struct {
	cfg     AuditConfig
	handler slog.Handler
	queue   chan auditEntry
	dropped prometheus.Counter
	log     *slog.Logger
	errOnce sync.Once
}

// auditEntry is one record, copied out of the request so the caller may
// reuse its Input.
type auditEntry struct {
	time                             time.Time
	denied                           bool
	decision                         Decision
	sourceID, destinationID, service string
	method, path, remoteAddr         string
}

// NewAuditor returns an Auditor writing to w. A rate outside 0..1 is
// clamped. If cfg.Registerer refuses the drop counter (e.g. it is already
// registered), the existing counter is used when there is one.
func NewAuditor(w io.Writer, cfg AuditConfig) *Auditor {
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultAuditBuffer
	}
	cfg.AllowedRate = min(max(cfg.AllowedRate, 0), 1)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sample == nil {
		cfg.Sample = rand.Float64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auditor{
		cfg: cfg,
		handler: slog.NewJSONHandler(w, &slog.HandlerOptions{
			// The record is exactly DESIGN.md's fields: no level.
			ReplaceAttr: func(groups []string, attr slog.Attr) slog.Attr {
				if len(groups) == 0 && attr.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return attr
			},
		}),
		queue: make(chan auditEntry, cfg.Buffer),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_audit_dropped_total",
			Help: "Audit records dropped because the audit sink was not keeping up.",
		}),
		log: log.With(logkey.Component, "audit"),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.dropped); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				if c, ok := are.ExistingCollector.(prometheus.Counter); ok {
					a.dropped = c
				}
			} else {
				a.log.Error("audit drop counter not registered", logkey.Error, err)
			}
		}
	}
	return a
}

// record queues the audit record of one decision without blocking: denials
// always, allows when sampled.
func (a *Auditor) record(d Decision, denied bool, in *Input, remoteAddr string) {
	if !denied && (a.cfg.AllowedRate == 0 || a.cfg.Sample() >= a.cfg.AllowedRate) {
		return
	}
	e := auditEntry{time: a.cfg.Now(), denied: denied, decision: d, remoteAddr: remoteAddr}
	if in != nil {
		e.sourceID, e.destinationID, e.service = in.Source.SPIFFEID, in.Destination.SPIFFEID, in.Destination.Service
		e.method, e.path = in.Request.Method, in.Request.Path
	}
	select {
	case a.queue <- e:
	default:
		a.dropped.Inc()
	}
}

// Run writes queued records until ctx is done, then writes every record
// still buffered and returns nil. Records queued after Run returns stay
// unwritten: stop the request path first.
func (a *Auditor) Run(ctx context.Context) error {
	for {
		select {
		case e := <-a.queue:
			a.write(e)
		case <-ctx.Done():
			for {
				select {
				case e := <-a.queue:
					a.write(e)
				default:
					return nil
				}
			}
		}
	}
}

func (a *Auditor) write(e auditEntry) {
	msg := MsgAllowed
	if e.denied {
		msg = MsgDenied
	}
	reasons := e.decision.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	r := slog.NewRecord(e.time, slog.LevelInfo, msg, 0)
	r.AddAttrs(
		slog.String(auditDecisionID, e.decision.ID),
		slog.String(auditSourceID, e.sourceID),
		slog.String(auditDestinationID, e.destinationID),
		slog.String(auditService, e.service),
		slog.String(auditMethod, e.method),
		slog.String(auditPath, e.path),
		slog.Any(auditReasons, reasons),
		slog.String(auditRevision, e.decision.Revision),
		slog.Bool(auditDryRun, e.decision.DryRun),
		slog.String(auditRemoteAddr, e.remoteAddr),
	)
	if err := a.handler.Handle(context.Background(), r); err != nil {
		// Logged once: a broken sink would otherwise flood the log.
		a.errOnce.Do(func() {
			a.log.Error("writing audit record failed; further failures are not logged", logkey.Error, err)
		})
	}
}

// sensitiveHeaders are the request headers whose values must never reach an
// audit record or a decision's reasons, even if a policy quotes them.
var sensitiveHeaders = [...]string{"authorization", "cookie", "proxy-authorization"}

// redacted replaces a secret in reasons.
const redacted = "[REDACTED]"

// redactReasons removes the values of sensitive headers from reasons (a
// policy may well sprintf a token into a reason): the whole value, and each
// of its parts (the credentials after "Bearer ", each cookie's value), so
// that a policy that splits the header leaks nothing either.
func redactReasons(reasons []string, headers map[string]string) []string {
	if len(reasons) == 0 || len(headers) == 0 {
		return reasons
	}
	var secrets []string
	for _, h := range sensitiveHeaders {
		v := headers[h]
		if v == "" {
			continue
		}
		secrets = append(secrets, v)
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ';' || r == '=' || r == ',' }) {
			if len(part) >= 4 { // shorter parts are cookie names and the like
				secrets = append(secrets, part)
			}
		}
	}
	if len(secrets) == 0 {
		return reasons
	}
	out := make([]string, len(reasons))
	for i, r := range reasons {
		for _, s := range secrets {
			r = strings.ReplaceAll(r, s, redacted)
		}
		out[i] = r
	}
	return out
}
