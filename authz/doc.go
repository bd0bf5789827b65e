// Package authz decides every request with Rego: it loads and hot-reloads a
// policy directory, evaluates it per request under a deadline, fails
// closed, caches decisions, and writes the audit log.
//
// # What it owns
//
//   - Loading: every .rego file and every data.json / data.yaml under the
//     policy directory (names starting with "." are skipped), Rego v1,
//     strict compile. The decision is data.meshguard.authz.allow; the
//     optional set data.meshguard.authz.reasons says why a request is
//     denied. The revision is a content hash of the files.
//   - Testing before use: a new revision's _test.rego tests run with OPA's
//     tester; only a revision that compiles and passes is swapped in (an
//     atomic.Pointer). A refused revision keeps the last good one, is
//     logged, and counts meshguard_policy_reloads_total{result="error"}.
//   - Evaluation: the queries are prepared once per revision and partially
//     evaluated against its data, so allow-list lookups become comparisons
//     that OPA's rule index selects; nothing is parsed or compiled per
//     request. A decision runs the prepared rule with OPA's interpreter
//     (topdown) directly, with a pooled per-evaluation state (rule memo,
//     deadline, input document refilled in place); only the parts of the
//     request the rules can read are converted to AST values.
//   - Failing closed: an evaluation error, a built-in error (strict), an
//     undefined or non-boolean allow, a non-string reason, the deadline, a
//     cancelled request, or no policy loaded are all denies whose reason
//     starts "policy error: ".
//   - Decision cache (golang-lru/v2 expirable), keyed by a canonical
//     encoding of the whole input and emptied on every swap. Caching is only
//     correct when a decision is a function of the input, the data and the
//     policy revision; a policy calling a non-deterministic built-in
//     (time.now_ns, http.send, rand.intn, uuid.rfc4122, net.lookup_ip_addr,
//     opa.runtime, ... — whatever OPA flags Nondeterministic) can decide
//     differently for the same input, so such a policy is detected at
//     compile time and its decisions are never cached. (expirable's cleanup
//     goroutine cannot be stopped in v2.0.7: one per Engine lives for the
//     life of the process.)
//   - Dry run: decisions are computed, counted as dry_run_deny or
//     dry_run_error, and audited with "dry_run": true, and the request is
//     allowed.
//   - Audit: an Auditor writes one JSON line per denial (and per sampled
//     allow) with exactly DESIGN.md's fields, from a bounded buffer that
//     drops and counts (meshguard_audit_dropped_total) rather than block the
//     request path, and flushes what it holds when it stops. Values of the
//     authorization, cookie and proxy-authorization headers never reach a
//     record or a reason.
//
// # Usage
//
//	audit := authz.NewAuditor(os.Stderr, authz.AuditConfig{AllowedRate: 0.01, Registerer: reg})
//	engine, err := authz.New(authz.Config{Dir: "/etc/meshguard/policies", CacheSize: authz.DefaultCacheSize,
//		Audit: audit, Logger: log, Registerer: reg})
//	// run engine.Run (hot reload) and audit.Run in the errgroup; readiness is engine.Ready()
//	d := engine.Authorize(ctx, &authz.Input{...}, r.RemoteAddr)
//	if !d.Allow { /* 403 {"error":"forbidden","decision_id": d.ID} */ }
//
// # Imports
//
// authz imports no other meshguard package (internal/logkey excepted); the
// proxy consumes it through a small interface of its own.
package authz
