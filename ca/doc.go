// Package ca is meshguard's issuing authority: it creates the CA directory
// (root, name-constrained intermediate, JWK provisioner), mints single-use
// join tokens bound to one SPIFFE ID, and serves smallstep's certificate
// authority in-process so that agents (and the step CLI) obtain and rotate
// X.509-SVIDs over HTTPS.
//
// The authority itself is github.com/smallstep/certificates/authority,
// embedded with authority.NewEmbedded, with its bbolt database in the CA
// directory so that used token IDs survive restarts. Its HTTP API
// (github.com/smallstep/certificates/api) is mounted on our listener with a
// guard in front of the issuing endpoints: the guard refuses weak CSR keys,
// rate-limits each caller, maps smallstep's policy failures to clear 4xx
// errors, and re-verifies every issued certificate (chain to the root plus
// the strict SVID rules of internal/svidcheck) before it leaves the server.
//
// Usage sketch:
//
//	fp, err := ca.Init(ca.InitConfig{Dir: dir, TrustDomain: "example.org"})
//	tok, err := ca.CreateToken(dir, spiffeid.RequireFromString("spiffe://example.org/svc/web"), 10*time.Minute)
//	srv, err := ca.NewServer(ca.Config{Dir: dir, Listen: "127.0.0.1:8443", Logger: log})
//	err = srv.Run(ctx)
//
// Join tokens are single use: smallstep records their IDs in ca.db, and
// replicas that share an etcd cluster also record them there through a
// TokenLedger (wired by `ca serve --store etcd://...`).
//
// The identity comes from the token, never from the CSR: the CSR only
// contributes its public key. Renewal over mTLS (/1.0/rekey with a new key,
// /1.0/renew with the old one) keeps exactly the SPIFFE ID of the presented
// SVID.
//
// This package may import registry (it hosts the registry API through
// Config.Registry as a plain http.Handler) and internal/*; it must not import
// identity, authz or proxy.
package ca
