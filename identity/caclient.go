package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxResponse bounds what the agent reads from the CA.
const maxResponse = 1 << 20

// ParseFingerprint normalises a root fingerprint given by an operator: the
// lowercase hex SHA-256 of the root's DER, accepting colons and upper case.
func ParseFingerprint(s string) (string, error) {
	fp := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(fp) != sha256.Size*2 {
		return "", fmt.Errorf("fingerprint %q: want the 64 hex digits of a SHA-256 (as printed by `meshguard ca init`)", s)
	}
	if _, err := hex.DecodeString(fp); err != nil {
		return "", fmt.Errorf("fingerprint %q: not hexadecimal", s)
	}
	return fp, nil
}

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// permanentError marks a CA answer that retrying cannot change (a refused
// token, a wrong root): the bootstrap stops instead of retrying.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// signResponse is step-ca's answer to /1.0/sign and /1.0/rekey.
type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
}

// caClient speaks the few step-ca endpoints the agent needs.
type caClient struct {
	base  *url.URL
	clock Clock
	// client verifies the CA against the pinned root and presents the
	// current SVID (if any) for rekey.
	client *http.Client
}

// parseCAURL checks the --ca value.
func parseCAURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("CA URL %q: %w", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("CA URL %q: want https://host:port", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("CA URL %q: must not carry user info, a query or a fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

func (c *caClient) endpoint(p string) string {
	u := *c.base
	u.Path += p
	return u.String()
}

// fetchPinnedRoot downloads the root named by fingerprint without verifying
// the connection, then accepts it only if its SHA-256 is fingerprint. This is
// step-ca's bootstrap: the fingerprint, obtained out of band, is the trust.
func fetchPinnedRoot(ctx context.Context, base *url.URL, fingerprint string, timeout time.Duration) (*x509.Certificate, error) {
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			// Only the fingerprint check below authenticates what this
			// connection returns; nothing else is read from it.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // pinned by fingerprint
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
	u := *base
	u.Path += "/root/" + fingerprint
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &permanentError{fmt.Errorf("fetch CA root: %w", err)}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CA root: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("fetch CA root: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError("fetch CA root", resp.StatusCode, body)
	}
	var rr struct {
		CA string `json:"ca"`
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, &permanentError{fmt.Errorf("fetch CA root: decode response: %w", err)}
	}
	certs, err := parsePEMCerts([]byte(rr.CA))
	if err != nil || len(certs) != 1 {
		return nil, &permanentError{fmt.Errorf("fetch CA root: want exactly one PEM certificate in the response")}
	}
	root := certs[0]
	if got := Fingerprint(root); got != fingerprint {
		return nil, &permanentError{fmt.Errorf("fetch CA root: the CA's root has fingerprint %s, not the %s given by --ca-fingerprint: refusing to trust it", got, fingerprint)}
	}
	if err := checkRoot(root); err != nil {
		return nil, &permanentError{fmt.Errorf("fetch CA root: %w", err)}
	}
	return root, nil
}

// checkRoot makes sure a pinned certificate can be a trust anchor.
func checkRoot(root *x509.Certificate) error {
	if !root.IsCA || !root.BasicConstraintsValid {
		return errors.New("pinned certificate is not a CA certificate")
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("pinned certificate is not self-signed: %w", err)
	}
	return nil
}

// newCAClient returns a client that trusts only root for the CA's TLS
// chain and presents cert() as its client certificate.
func newCAClient(base *url.URL, root *x509.Certificate, clk Clock, timeout time.Duration, cert func() *tls.Certificate) *caClient {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	tlsConf := &tls.Config{
		RootCAs:    pool,
		MinVersion: tls.VersionTLS12,
		ServerName: base.Hostname(),
		Time:       clk.Now,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := cert(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
	}
	return &caClient{
		base:  base,
		clock: clk,
		client: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				TLSClientConfig: tlsConf,
				// A fresh connection per call: a kept-alive connection would
				// keep presenting the SVID it was opened with after a rotation.
				DisableKeepAlives: true,
				Proxy:             nil,
				DialContext:       (&net.Dialer{Timeout: timeout}).DialContext,
			},
		},
	}
}

// sign asks for an SVID with the join token (POST /1.0/sign).
func (c *caClient) sign(ctx context.Context, csrPEM []byte, token string, ttl time.Duration) (*signResponse, error) {
	body := map[string]any{"csr": string(csrPEM), "ott": token}
	if ttl > 0 {
		body["notAfter"] = ttl.String()
	}
	return c.post(ctx, "/1.0/sign", "sign SVID with join token", body)
}

// rekey asks for a new SVID for a new key over mTLS (POST /1.0/rekey).
func (c *caClient) rekey(ctx context.Context, csrPEM []byte) (*signResponse, error) {
	return c.post(ctx, "/1.0/rekey", "renew SVID", map[string]any{"csr": string(csrPEM)})
}

func (c *caClient) post(ctx context.Context, path, what string, payload any) (*signResponse, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(path), bytes.NewReader(b))
	if err != nil {
		return nil, &permanentError{fmt.Errorf("%s: %w", what, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s: read response: %w", what, err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, statusError(what, resp.StatusCode, body)
	}
	var sr signResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		// The verified CA answered success with garbage: retrying would
		// spend nothing new and fix nothing (a join token is spent by now).
		return nil, &permanentError{fmt.Errorf("%s: decode response: %w", what, err)}
	}
	return &sr, nil
}

// roots fetches the CA's current roots (GET /roots.pem) over the verified
// connection.
func (c *caClient) roots(ctx context.Context) ([]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("/roots.pem"), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch CA roots: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CA roots: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("fetch CA roots: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError("fetch CA roots", resp.StatusCode, body)
	}
	certs, err := parsePEMCerts(body)
	if err != nil {
		return nil, fmt.Errorf("fetch CA roots: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("fetch CA roots: no certificate in the response")
	}
	for _, r := range certs {
		if err := checkRoot(r); err != nil {
			return nil, fmt.Errorf("fetch CA roots: %s: %w", r.Subject, err)
		}
	}
	return certs, nil
}

// statusError turns a non-success answer into an error that quotes the
// CA's message (step-ca answers {"status":..,"message":..}), sanitised.
// Client errors other than 408/429 are permanent.
func statusError(what string, code int, body []byte) error {
	var e struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		msg = e.Message
	} else {
		msg = string(body)
	}
	msg = sanitize(msg)
	err := fmt.Errorf("%s: CA answered %d %s", what, code, http.StatusText(code))
	if msg != "" {
		err = fmt.Errorf("%s: CA answered %d %s: %s", what, code, http.StatusText(code), msg)
	}
	if code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests {
		return &permanentError{err}
	}
	return err
}

// sanitize keeps a remote message printable and short before it reaches logs.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// newKeyAndCSR makes a fresh P-256 key and a CSR for id (empty subject, one
// URI SAN), as the CA's JWK provisioner expects.
func newKeyAndCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// parsePEMCerts parses every CERTIFICATE block; any other block is an error.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("trailing data after the PEM certificates")
	}
	return certs, nil
}

// samePublicKey reports whether a certificate carries key's public half.
func samePublicKey(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
