package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/certificates/policy"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/jose"

	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/internal/svidcheck"
)

// Issuing methods, as they appear in logs and metrics.
const (
	methodSign  = "sign"
	methodRenew = "renew"
	methodRekey = "rekey"
)

// errorBody is the JSON error every CA endpoint returns; it has the shape
// of smallstep's errors so that step clients and ours read both alike.
type errorBody struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Status: status, Message: msg})
}

// guardSign wraps smallstep's /sign: per-IP rate limit, CSR key check and
// token shape check before the token is spent, then verification of the
// issued SVID against the token's SPIFFE ID and the CSR's key.
func (s *Server) guardSign(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		remote := remoteIP(r)
		log := s.log.With(slog.String("method", methodSign), slog.String("remote_addr", remote))
		if !s.limiter.allow("ip:" + remote) {
			s.refuse(w, log, methodSign, "rate_limited", http.StatusTooManyRequests, "too many certificate requests from this address; retry later")
			return
		}
		body, err := readBody(w, r)
		if err != nil {
			s.refuse(w, log, methodSign, "bad_request", statusForBodyError(err), err.Error())
			return
		}
		var req struct {
			CSR       string          `json:"csr"`
			OTT       string          `json:"ott"`
			NotBefore json.RawMessage `json:"notBefore"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			s.refuse(w, log, methodSign, "bad_request", http.StatusBadRequest, "request body is not a JSON sign request: "+err.Error())
			return
		}
		if nb := strings.TrimSpace(string(req.NotBefore)); nb != "" && nb != "null" && nb != `""` {
			s.refuse(w, log, methodSign, "bad_request", http.StatusBadRequest, "notBefore is chosen by the CA (now, backdated for clock skew); leave it out")
			return
		}
		csr, err := parseCSR(req.CSR)
		if err != nil {
			s.refuse(w, log, methodSign, "bad_csr", http.StatusBadRequest, err.Error())
			return
		}
		if err := checkKey(csr.PublicKey); err != nil {
			s.refuse(w, log, methodSign, "weak_key", http.StatusBadRequest, err.Error())
			return
		}
		id, err := tokenSubject(req.OTT)
		if err != nil {
			s.refuse(w, log, methodSign, "bad_token", http.StatusUnauthorized, err.Error())
			return
		}
		if err := CheckWorkloadID(id.TrustDomain(), id); err != nil {
			s.refuse(w, log, methodSign, "bad_token", http.StatusForbidden, "token: "+err.Error())
			return
		}
		log = log.With(slog.String(logkey.SPIFFEID, id.String()))
		if err := s.spendToken(r.Context(), req.OTT); errors.Is(err, errTokenUsed) {
			s.refuse(w, log, methodSign, "token_replay", http.StatusUnauthorized, err.Error())
			return
		} else if err != nil {
			log.Error("token ledger unavailable; refusing to issue", slog.Any(logkey.Error, err))
			s.metrics.refused(methodSign, "ledger_unavailable")
			writeError(w, http.StatusServiceUnavailable, "the CA cannot record token use right now; retry later")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.issue(w, r, next, log, methodSign, id, csr.PublicKey)
	}
}

// guardRenew wraps smallstep's /renew and /rekey: the caller must present
// a verified SVID of our trust domain (no bearer tokens), is rate-limited
// by its SPIFFE ID, and gets exactly the same ID back; rekey additionally
// needs a strong, new key.
func (s *Server) guardRenew(next http.HandlerFunc, method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := s.log.With(slog.String("method", method), slog.String("remote_addr", remoteIP(r)))
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			s.refuse(w, log, method, "no_client_cert", http.StatusUnauthorized, method+" needs the current SVID as TLS client certificate")
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		id, err := svidcheck.Leaf(leaf)
		if err != nil {
			s.refuse(w, log, method, "bad_client_cert", http.StatusForbidden, err.Error())
			return
		}
		if err := CheckWorkloadID(s.material.TrustDomain, id); err != nil {
			s.refuse(w, log, method, "bad_client_cert", http.StatusForbidden, err.Error())
			return
		}
		log = log.With(slog.String(logkey.SPIFFEID, id.String()))
		if !s.limiter.allow("id:" + id.String()) {
			s.refuse(w, log, method, "rate_limited", http.StatusTooManyRequests, "too many certificate requests for "+id.String()+"; retry later")
			return
		}
		wantKey := leaf.PublicKey
		if method == methodRekey {
			body, err := readBody(w, r)
			if err != nil {
				s.refuse(w, log, method, "bad_request", statusForBodyError(err), err.Error())
				return
			}
			var req struct {
				CSR string `json:"csr"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				s.refuse(w, log, method, "bad_request", http.StatusBadRequest, "request body is not a JSON rekey request: "+err.Error())
				return
			}
			csr, err := parseCSR(req.CSR)
			if err != nil {
				s.refuse(w, log, method, "bad_csr", http.StatusBadRequest, err.Error())
				return
			}
			if err := checkKey(csr.PublicKey); err != nil {
				s.refuse(w, log, method, "weak_key", http.StatusBadRequest, err.Error())
				return
			}
			if publicKeysEqual(csr.PublicKey, leaf.PublicKey) {
				s.refuse(w, log, method, "same_key", http.StatusBadRequest, "rekey needs a new key; the CSR carries the current one")
				return
			}
			wantKey = csr.PublicKey
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		s.issue(w, r, next, log, method, id, wantKey)
	}
}

// issue runs smallstep's handler into a buffer, then either returns its
// certificate after verifying it or turns its error into a clear one.
func (s *Server) issue(w http.ResponseWriter, r *http.Request, next http.HandlerFunc, log *slog.Logger, method string, id spiffeid.ID, wantKey crypto.PublicKey) {
	rec := newRecorder()
	next(rec, r)
	if rec.status != http.StatusCreated {
		status, msg := s.mapError(rec)
		log.Warn("certificate request refused", slog.Int("status", status), slog.Int("authority_status", rec.status),
			slog.String("reason", msg), slog.Any(logkey.Error, rec.err))
		s.metrics.refused(method, "authority")
		writeError(w, status, msg)
		return
	}
	leaf, err := s.verifyIssued(rec.body.Bytes(), id, wantKey)
	if err != nil {
		log.Error("issued certificate failed verification; not returned", slog.Any(logkey.Error, err))
		s.metrics.refused(method, "verification")
		writeError(w, http.StatusInternalServerError, "the CA produced a certificate that failed its own checks; it was not returned")
		return
	}
	log.Info("certificate issued", slog.String("serial", leaf.SerialNumber.String()),
		slog.Time(logkey.Expiry, leaf.NotAfter))
	s.metrics.issued(method)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// mapError turns a smallstep error response into a status and message for
// the caller. Name-policy and name-constraint refusals, which smallstep
// reports as 500, become 403; other 5xx keep their status with a generic
// message (the detail is logged).
func (s *Server) mapError(rec *recorder) (int, string) {
	var body errorBody
	_ = json.Unmarshal(rec.body.Bytes(), &body)
	msg := body.Message
	var npe *policy.NamePolicyError
	nameRefusal := errors.As(rec.err, &npe) ||
		(rec.status == http.StatusForbidden || rec.status >= 500) && (isConstraintError(rec.err) || isConstraintError(errors.New(rec.body.String())))
	if nameRefusal {
		detail := rec.body.String()
		if rec.err != nil {
			detail = rec.err.Error()
		}
		return http.StatusForbidden, "the requested identity is outside the CA's trust domain " + s.material.TrustDomain.Name() + ": " + lastLine(detail)
	}
	if rec.status == 0 {
		return http.StatusInternalServerError, "internal error"
	}
	if rec.status >= 500 {
		return rec.status, "internal error while issuing the certificate"
	}
	if msg == "" {
		msg = http.StatusText(rec.status)
	}
	if rec.status == http.StatusUnauthorized {
		detail := ""
		if rec.err != nil {
			detail = rec.err.Error()
		}
		switch {
		case strings.Contains(detail, "token already used"):
			msg = "the token was already used; join tokens are single use"
		case strings.Contains(detail, "token is expired"):
			msg = "the token has expired"
		case strings.Contains(detail, "validation failed, token not valid yet"):
			msg = "the token is not valid yet"
		default:
			msg += " (the token is invalid or not from this CA, or the client certificate is not acceptable)"
		}
	}
	return rec.status, msg
}

func isConstraintError(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "not allowed") || strings.Contains(m, "not permitted") || strings.Contains(m, "name constraint")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// verifyIssued checks the certificate smallstep produced before anyone
// sees it: it chains to our root through our intermediate, passes the
// strict SVID rules, carries exactly the expected SPIFFE ID and key, has an
// empty subject and both TLS EKUs, and does not outlive the SVID TTL.
func (s *Server) verifyIssued(body []byte, want spiffeid.ID, wantKey crypto.PublicKey) (*x509.Certificate, error) {
	var resp struct {
		Crt       string   `json:"crt"`
		CertChain []string `json:"certChain"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("verify issued certificate: decode response: %w", err)
	}
	leaf, err := parseCertPEM(resp.Crt)
	if err != nil {
		return nil, fmt.Errorf("verify issued certificate: %w", err)
	}
	if len(resp.CertChain) != 2 {
		return nil, fmt.Errorf("verify issued certificate: chain has %d certificates, want leaf and intermediate", len(resp.CertChain))
	}
	if inter, err := parseCertPEM(resp.CertChain[1]); err != nil || !inter.Equal(s.material.Intermediate) {
		return nil, errors.New("verify issued certificate: chain does not end in our intermediate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         s.roots,
		Intermediates: s.inters,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("verify issued certificate: %w", err)
	}
	got, err := svidcheck.Leaf(leaf)
	if err != nil {
		return nil, fmt.Errorf("verify issued certificate: %w", err)
	}
	if got != want {
		return nil, fmt.Errorf("verify issued certificate: SPIFFE ID %s, want %s", got, want)
	}
	if !publicKeysEqual(leaf.PublicKey, wantKey) {
		return nil, errors.New("verify issued certificate: public key differs from the requested one")
	}
	if len(leaf.Subject.Names) != 0 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		return nil, errors.New("verify issued certificate: subject or non-URI SANs present")
	}
	var client, server bool
	for _, u := range leaf.ExtKeyUsage {
		client = client || u == x509.ExtKeyUsageClientAuth
		server = server || u == x509.ExtKeyUsageServerAuth
	}
	if !client || !server {
		return nil, errors.New("verify issued certificate: EKU lacks clientAuth or serverAuth")
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > s.cfg.SVIDTTL+Backdate+time.Minute {
		// A renewal keeps the old lifetime; --svid-ttl may have shrunk since.
		return nil, fmt.Errorf("verify issued certificate: lifetime %s exceeds the SVID TTL %s", life, s.cfg.SVIDTTL)
	}
	return leaf, nil
}

// checkKey accepts the keys an SVID may carry: ECDSA P-256 or P-384,
// Ed25519, RSA of at least 2048 bits.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("CSR key: ECDSA curve %s not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < svidcheck.MinRSABits {
			return fmt.Errorf("CSR key: RSA key of %d bits is too weak; use at least %d bits (or ECDSA P-256)", k.N.BitLen(), svidcheck.MinRSABits)
		}
	default:
		return fmt.Errorf("CSR key: key type %T not accepted; use ECDSA P-256", pub)
	}
	return nil
}

func parseCSR(s string) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("csr: want exactly one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: bad signature: %w", err)
	}
	return csr, nil
}

func parseCertPEM(s string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// tokenSubject reads the SPIFFE ID a join token claims, without verifying
// it (smallstep does that); it only decides what the issued certificate
// must carry.
func tokenSubject(ott string) (spiffeid.ID, error) {
	if ott == "" {
		return spiffeid.ID{}, errors.New("missing token (ott)")
	}
	tok, err := jose.ParseSigned(ott)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("token is not a JWT: %w", err)
	}
	var claims struct {
		Subject string   `json:"sub"`
		SANs    []string `json:"sans"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return spiffeid.ID{}, fmt.Errorf("token claims: %w", err)
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("token subject is not a SPIFFE ID: %w", err)
	}
	if len(claims.SANs) > 0 && (len(claims.SANs) != 1 || claims.SANs[0] != claims.Subject) {
		return spiffeid.ID{}, errors.New("token sans must be exactly its subject")
	}
	return id, nil
}

// readBody reads a request body under the size cap with its own deadline,
// so a slow sender cannot hold a connection open.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}

func statusForBodyError(err error) int {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// refuse answers a request the guards turned down.
func (s *Server) refuse(w http.ResponseWriter, log *slog.Logger, method, reason string, status int, msg string) {
	log.Warn("certificate request refused", slog.String("reason", reason), slog.Int("status", status), slog.String("detail", msg))
	s.metrics.refused(method, reason)
	writeError(w, status, msg)
}

// recorder buffers smallstep's response so it can be checked before it is
// sent, and captures the internal error smallstep attaches for logging.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	fields map[string]any
	err    error
}

func newRecorder() *recorder { return &recorder{header: http.Header{}, fields: map[string]any{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// WithFields and Fields let smallstep's api/log hand us its error.
func (r *recorder) WithFields(f map[string]any) {
	for k, v := range f {
		r.fields[k] = v
		if e, ok := v.(error); ok && k == "error" {
			r.err = e
		}
	}
}
func (r *recorder) Fields() map[string]any { return r.fields }
