package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/logkey"
)

// Defaults: Config fields left zero take these, except CacheSize (0 turns the
// cache off), whose flag default is DefaultCacheSize.
const (
	DefaultTimeout      = 100 * time.Millisecond
	DefaultCacheSize    = 10000
	DefaultCacheTTL     = 10 * time.Second
	DefaultPollInterval = time.Second
)

// ErrNoPolicy is what Ready returns (wrapped) until a policy revision has
// been loaded.
var ErrNoPolicy = errors.New("no policy loaded")

// Config configures an Engine. Zero values take the defaults above.
type Config struct {
	// Dir is the policy directory (--policy). Required.
	Dir string
	// Timeout bounds one evaluation (--policy-timeout); past it the
	// request is denied with a policy error.
	Timeout time.Duration
	// CacheSize is the number of cached decisions (--decision-cache,
	// whose default is DefaultCacheSize). 0 disables the cache.
	CacheSize int
	// CacheTTL is how long a cached decision lives (--decision-cache-ttl).
	CacheTTL time.Duration
	// PollInterval is how often Run checks the directory for a new revision.
	PollInterval time.Duration
	// DryRun makes every decision an allow while still computing,
	// counting and auditing what the policy said (--dry-run).
	DryRun bool
	// SkipTests loads revisions without running their _test.rego files
	// (policy eval does this, to show what a policy with failing tests does).
	SkipTests bool
	// Audit receives denials (and sampled allows) from Authorize. Nil: no audit.
	Audit *Auditor
	// Logger gets reload outcomes. Nil: discarded.
	Logger *slog.Logger
	// Registerer gets the authz metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Now is the clock for decision IDs and for Rego's time built-ins.
	Now func() time.Time
}

// Engine decides requests against the current policy revision. It is safe
// for concurrent use; the revision is swapped whole, readers never lock.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	metrics *engineMetrics
	ids     idGenerator
	keys    *inputKeys
	cache   *expirable.LRU[string, cachedDecision] // nil when disabled

	current atomic.Pointer[compiledSet]

	reloadMu  sync.Mutex // serializes Reload; guards the fields below
	failedRev string     // last revision refused, so a poll does not retry it
	failedErr error
	loadErr   atomic.Pointer[error]  // why no policy is loaded yet, for Ready
	refusal   atomic.Pointer[string] // why the last revision was refused, for Status (lock-free: a reload may run long)
}

// cachedDecision is a cached policy outcome, tagged with the revision that
// produced it: an evaluation that started before a swap may finish after the
// purge, and its entry must not answer for the new revision.
type cachedDecision struct {
	revision string
	allow    bool
	reasons  []string
}

// New returns an Engine and loads the policy directory once. A directory
// that fails to load does not fail New: the engine denies everything, Ready
// says why, and Run keeps trying. New fails only on bad configuration.
func New(cfg Config) (*Engine, error) {
	if cfg.Dir == "" {
		return nil, errors.New("creating authz engine: policy directory is required")
	}
	if cfg.Timeout < 0 || cfg.CacheSize < 0 || cfg.CacheTTL < 0 || cfg.PollInterval < 0 {
		return nil, errors.New("creating authz engine: timeout, cache size, cache TTL and poll interval must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newEngineMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("creating authz engine: %w", err)
	}
	e := &Engine{cfg: cfg, log: log.With(logkey.Component, "authz"), metrics: m, keys: newInputKeys()}
	if cfg.CacheSize > 0 {
		e.cache = expirable.NewLRU[string, cachedDecision](cfg.CacheSize, nil, cfg.CacheTTL)
	}
	noPolicy := ErrNoPolicy
	e.loadErr.Store(&noPolicy)
	if err := e.Reload(context.Background()); err != nil {
		e.log.Error("policy not loaded; denying every request until a revision loads", logkey.Path, cfg.Dir, logkey.Error, err)
	}
	return e, nil
}

// Ready returns nil once a policy revision is loaded; before that, an error
// wrapping ErrNoPolicy and, when there is one, the load failure.
func (e *Engine) Ready() error {
	if e.current.Load() != nil {
		return nil
	}
	return *e.loadErr.Load()
}

// Revision returns the content hash of the policy revision in force, or ""
// when none is loaded.
func (e *Engine) Revision() string {
	if s := e.current.Load(); s != nil {
		return s.revision
	}
	return ""
}

// Nondeterministic returns the non-deterministic built-ins the loaded
// policy calls; when it is non-empty the decision cache is bypassed.
func (e *Engine) Nondeterministic() []string {
	if s := e.current.Load(); s != nil {
		return append([]string(nil), s.nondeterministic...)
	}
	return nil
}

// Run polls the policy directory every PollInterval and hot-reloads new
// revisions until ctx is done. Polling rather than fsnotify: it needs no new
// dependency, and it sees every way a policy directory changes in practice —
// editors that save by rename, Kubernetes ConfigMaps swapped through a
// "..data" symlink, network file systems where inotify is silent. The
// revision is a content hash, so a poll that finds nothing new costs one
// read of a small directory and nothing else.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := e.Reload(ctx); err != nil && !errors.Is(err, errAlreadyRefused) {
				e.log.Error("policy reload refused; keeping the last good revision",
					logkey.Path, e.cfg.Dir, logkey.Revision, e.Revision(), logkey.Error, err)
			}
		}
	}
}

// errAlreadyRefused marks a Reload that found the same bad revision again.
var errAlreadyRefused = errors.New("revision already refused")

// Reload reads the policy directory and, if its content changed, compiles
// it, runs its tests, prepares the decision query and swaps it in. On any
// failure the revision in force stays, the failure is counted, and the error
// is returned (a *PolicyError for parse or compile errors, a *TestFailure
// for failing tests). A revision already refused is not retried until the
// directory changes again; Reload then returns an error wrapping
// errAlreadyRefused and the original failure.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	files, rev, err := readPolicyDir(e.cfg.Dir)
	if err != nil {
		// An unreadable directory is refused once per distinct error, not
		// counted and logged on every poll while it lasts.
		if e.failedRev == "" && e.failedErr != nil && e.failedErr.Error() == err.Error() {
			return fmt.Errorf("%w: %w", errAlreadyRefused, err)
		}
		return e.refuse("", err)
	}
	if cur := e.current.Load(); cur != nil && cur.revision == rev {
		// Back to the revision in force (a bad edit reverted): nothing
		// to load, nothing refused any more.
		e.failedRev, e.failedErr = "", nil
		e.refusal.Store(nil)
		return nil
	}
	if rev == e.failedRev {
		return fmt.Errorf("%w: %s: %w", errAlreadyRefused, rev, e.failedErr)
	}
	set, err := compile(ctx, files, rev, e.cfg.SkipTests)
	if err != nil {
		return e.refuse(rev, fmt.Errorf("loading policy revision %s: %w", rev, err))
	}
	old := e.current.Swap(set)
	if old != nil {
		e.metrics.revision.DeleteLabelValues(old.revision)
	}
	e.metrics.revision.WithLabelValues(rev).Set(1)
	if e.cache != nil {
		e.cache.Purge()
	}
	e.failedRev, e.failedErr = "", nil
	e.refusal.Store(nil)
	e.metrics.reloads.WithLabelValues(labelReloadOK).Inc()
	if set.partialErr != nil {
		e.log.Warn("policy evaluated as written: partial evaluation was not possible (decisions are correct, only slower)",
			logkey.Revision, rev, logkey.Error, set.partialErr)
	}
	if len(set.nondeterministic) > 0 {
		e.log.Info("policy loaded; decision cache bypassed because the policy calls non-deterministic built-ins",
			logkey.Revision, rev, logkey.Builtins, strings.Join(set.nondeterministic, ","))
	} else {
		e.log.Info("policy loaded", logkey.Revision, rev, logkey.Files, len(set.files))
	}
	return nil
}

func (e *Engine) refuse(rev string, err error) error {
	e.failedRev, e.failedErr = rev, err
	msg := err.Error()
	e.refusal.Store(&msg)
	e.metrics.reloads.WithLabelValues(labelReloadFailed).Inc()
	if e.current.Load() == nil {
		wrapped := fmt.Errorf("%w: %w", ErrNoPolicy, err)
		e.loadErr.Store(&wrapped)
	}
	return err
}

// Decide evaluates in against the policy in force, without auditing, and
// returns the decision (see Authorize).
func (e *Engine) Decide(ctx context.Context, in *Input) Decision {
	d, _ := e.decide(ctx, in, nil)
	return d
}

// Authorize decides in, audits the decision (denials always; allows sampled
// by the Auditor's AllowedRate) and returns it. It never returns an error:
// failures are denies with reason "policy error: ...". In dry-run mode the
// returned decision allows, with DryRun set and the policy's reasons kept.
func (e *Engine) Authorize(ctx context.Context, in *Input, remoteAddr string) Decision {
	d, denied := e.decide(ctx, in, nil)
	if e.cfg.Audit != nil {
		e.cfg.Audit.record(d, denied, in, remoteAddr)
	}
	return d
}

// decide returns the decision and whether the policy denied (which, in
// dry-run mode, the decision's Allow no longer shows).
// A non-nil tracer sees the evaluation, which then bypasses the cache.
func (e *Engine) decide(ctx context.Context, in *Input, tracer topdown.QueryTracer) (Decision, bool) {
	now := e.cfg.Now()
	d := Decision{ID: e.ids.next(now), DryRun: e.cfg.DryRun}
	set := e.current.Load()
	var allow, failed bool
	switch {
	case set == nil:
		d.Reasons, failed = []string{"policy error: " + ErrNoPolicy.Error()}, true
	case in == nil:
		d.Revision = set.revision
		d.Reasons, failed = []string{"policy error: no input"}, true
	default:
		d.Revision = set.revision
		allow, d.Reasons, d.Cached, failed = e.evaluate(ctx, set, in, now, tracer)
	}
	label := labelAllow
	switch {
	case failed:
		label = labelError
	case !allow:
		label = labelDeny
	}
	denied := !allow
	if denied && e.cfg.DryRun {
		label = labelDryRunDeny
		if failed {
			label = labelDryRunError
		}
		allow = true
	}
	d.Allow = allow
	e.metrics.byDecision[label].Inc()
	return d, denied
}

// evaluate answers from the cache when the policy is deterministic, else
// runs the prepared query under the per-evaluation deadline.
func (e *Engine) evaluate(ctx context.Context, set *compiledSet, in *Input, now time.Time, tracer topdown.QueryTracer) (allow bool, reasons []string, cached, failed bool) {
	useCache := e.cache != nil && len(set.nondeterministic) == 0 && tracer == nil
	var key string
	if useCache {
		key = in.cacheKey()
		if c, ok := e.cache.Get(key); ok && c.revision == set.revision {
			e.metrics.cacheHits.Inc()
			// A copy: the caller owns its Decision, the cache its entry.
			return c.allow, slices.Clone(c.reasons), true, false
		}
	}
	start := time.Now()
	allow, reasons, err := e.eval(ctx, set, in, now, tracer)
	e.metrics.evalDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		// Error messages quote values (a built-in's bad argument may be a
		// header): they are redacted like reasons.
		return false, redactReasons([]string{"policy error: " + err.Error()}, in.Request.Headers), false, true
	}
	reasons = redactReasons(reasons, in.Request.Headers)
	if useCache {
		e.cache.Add(key, cachedDecision{revision: set.revision, allow: allow, reasons: reasons})
	}
	return allow, reasons, false, false
}

// eval runs the allow query and, when it denies, the reasons query, both
// under one deadline. With a tracer (Explain), the combined query over the
// rules as written runs instead.
func (e *Engine) eval(ctx context.Context, set *compiledSet, in *Input, now time.Time, tracer topdown.QueryTracer) (bool, []string, error) {
	if err := ctx.Err(); err != nil {
		return false, nil, fmt.Errorf("evaluation cancelled: %w", err)
	}
	if tracer != nil {
		return e.explain(ctx, set, in, now, tracer)
	}
	// The deadline reaches the interpreter as an external Cancel that it
	// polls between steps; the state carrying it (and the rule memo) is
	// pooled, so a decision allocates no context, timer or AfterFunc.
	st := getEvalState(e.cfg.Timeout)
	defer putEvalState(st)
	st.deadline.done = ctx.Done()
	if len(set.nondeterministic) > 0 {
		// Built-ins that do I/O (http.send, net.lookup_ip_addr) are all
		// non-deterministic; they wait on ctx, which must then carry the
		// deadline too.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.Timeout)
		defer cancel()
	}
	input := e.keys.fill(&st.input, in, set.input)
	allow, defined, err := set.allow.eval(ctx, st, input, now)
	if err != nil {
		return false, nil, e.evalError(ctx, st, e.locate(ctx, st, set, in, now, err))
	}
	if !defined {
		return decisionValue(nil, false, nil)
	}
	if b, ok := allow.(ast.Boolean); !ok || bool(b) {
		return astDecision(allow, nil)
	}
	st.rules.reset() // each query starts with an empty memo, as with OPA's own
	reasons, _, err := set.reasons.eval(ctx, st, input, now)
	if err != nil {
		return false, nil, e.evalError(ctx, st, e.locate(ctx, st, set, in, now, err))
	}
	return astDecision(allow, reasons)
}

// explain runs the combined query over the rules as written, traced.
func (e *Engine) explain(ctx context.Context, set *compiledSet, in *Input, now time.Time, tracer topdown.QueryTracer) (bool, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	stopper := topdown.NewCancel()
	stop := context.AfterFunc(ctx, stopper.Cancel)
	defer stop()
	rs, err := set.explain.Eval(ctx, rego.EvalParsedInput(e.keys.astValue(in)), rego.EvalTime(now),
		rego.EvalQueryTracer(tracer), rego.EvalExternalCancel(stopper))
	if err != nil {
		return false, nil, e.evalError(ctx, nil, err)
	}
	if len(rs) != 1 {
		return decisionValue(nil, false, nil)
	}
	return decisionValue(rs[0].Bindings["allow"], true, rs[0].Bindings["reasons"])
}

// astDecision is decisionValue for answers read as AST values. The usual
// answers (a boolean; a set of strings) are read directly; anything else
// goes through the JSON form, so that errors read the same.
func astDecision(allow, reasons ast.Value) (bool, []string, error) {
	b, ok := allow.(ast.Boolean)
	if !ok {
		return decisionValue(astJSON(allow), true, nil)
	}
	if b || reasons == nil {
		return bool(b), nil, nil
	}
	if set, ok := reasons.(ast.Set); ok {
		out := make([]string, 0, set.Len())
		if set.Until(func(t *ast.Term) bool {
			s, ok := t.Value.(ast.String)
			out = append(out, string(s))
			return !ok
		}) {
			return decisionValue(false, true, astJSON(reasons))
		}
		return false, out, nil
	}
	return decisionValue(false, true, astJSON(reasons))
}

func astJSON(v ast.Value) any {
	if v == nil {
		return nil
	}
	j, err := ast.JSON(v)
	if err != nil {
		return v // not JSON-representable: typeName says "number", as before
	}
	return j
}

// locate re-runs a failed evaluation on the rules as written: errors from
// the partially evaluated queries name generated rules, the rules as written
// give the operator a file and a line. It runs only on the error path.
func (e *Engine) locate(ctx context.Context, st *evalState, set *compiledSet, in *Input, now time.Time, err error) error {
	if ctx.Err() != nil || topdown.IsCancel(err) {
		return err
	}
	// Under what is left of the same deadline.
	var deadline rego.EvalOption = func(*rego.EvalContext) {}
	if st != nil {
		deadline = rego.EvalExternalCancel(&st.deadline)
	}
	if _, located := set.explain.Eval(ctx, rego.EvalParsedInput(e.keys.astValue(in)), rego.EvalTime(now), deadline); located != nil && ctx.Err() == nil {
		return located
	}
	return err
}

func (e *Engine) evalError(ctx context.Context, st *evalState, err error) error {
	if (st != nil && st.deadline.timedOut()) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("evaluation exceeded the %s policy timeout", e.cfg.Timeout)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("evaluation cancelled: %w", ctx.Err())
	}
	return err
}

// decisionValue checks the policy's answers: allow defined and boolean;
// reasons (when defined) a set of strings, reported only for a denial.
func decisionValue(allow any, defined bool, reasons any) (bool, []string, error) {
	if !defined {
		return false, nil, errors.New(DecisionRef + " is undefined")
	}
	b, ok := allow.(bool)
	if !ok {
		return false, nil, fmt.Errorf("%s is not a boolean (got %s)", DecisionRef, typeName(allow))
	}
	if b || reasons == nil {
		return b, nil, nil
	}
	raw, ok := reasons.([]any)
	if !ok {
		return false, nil, fmt.Errorf("data.meshguard.authz.reasons is not a set of strings (got %s)", typeName(reasons))
	}
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		s, ok := r.(string)
		if !ok {
			return false, nil, fmt.Errorf("data.meshguard.authz.reasons holds a non-string (%s)", typeName(r))
		}
		out = append(out, s)
	}
	return false, out, nil
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "array or set"
	case map[string]any:
		return "object"
	default:
		return "number"
	}
}
