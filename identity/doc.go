// Package identity owns the agent's X.509-SVID and trust bundle.
//
// Two sources, one surface. CASource obtains the SVID from the meshguard CA
// (step-ca's HTTP API): it pins the CA's root by SHA-256 fingerprint,
// bootstraps with a single-use join token (POST /1.0/sign), renews over
// mTLS with a new key at half the SVID's lifetime ±10% (POST /1.0/rekey),
// retries with capped exponential backoff while the CA is down, and
// persists key, SVID and bundle in a data directory (0600, atomic writes)
// so a restart needs no new token while the persisted SVID is valid.
// WorkloadAPISource takes the SVID and bundles from any SPIFFE Workload API
// through go-spiffe's workloadapi.X509Source.
//
// Both satisfy go-spiffe's x509svid.Source and x509bundle.Source (so
// tlsconfig works on them), and add Changed (a channel closed at the next
// change: a broadcast), Ready (nil while the SVID is valid) and Status.
// Every SVID accepted passes internal/svidcheck. Metrics:
// meshguard_svid_expiry_timestamp_seconds, meshguard_svid_rotations_total
// and meshguard_svid_rotation_errors_total.
//
// Usage:
//
//	src, err := identity.NewCASource(identity.CAConfig{URL: caURL, Fingerprint: fp, Token: tok, Service: "web", DataDir: dir, Registerer: reg})
//	if err != nil { ... }
//	if err := src.Bootstrap(ctx); err != nil { ... } // first SVID
//	go src.Run(ctx)                                    // rotation
//	tlsConf := tlsconfig.MTLSServerConfig(src, src, authorizer)
//	for { ch := src.Changed(); /* use src */ <-ch }
//
// The sub-package workload serves the SPIFFE Workload API from a source.
//
// identity imports no other meshguard package (internal/* only), and none
// of smallstep's server packages: the CA client is stdlib crypto/x509.
package identity
