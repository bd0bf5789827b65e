// Package testca is an in-memory certificate authority for tests: real
// ECDSA keys and real X.509 chains, plus knobs to mint the hostile
// certificates that meshguard must refuse. It is imported only by tests.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a root (optionally with intermediates) that signs test SVIDs.
type CA struct {
	tb     testing.TB
	td     spiffeid.TrustDomain
	parent *CA
	cert   *x509.Certificate
	key    crypto.Signer
}

// New returns a self-signed root CA for td, valid from an hour ago for a day.
func New(tb testing.TB, td spiffeid.TrustDomain) *CA {
	tb.Helper()
	key := NewKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "meshguard test root " + td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{tb: tb, td: td, cert: sign(tb, tmpl, tmpl, key.Public(), key), key: key}
}

// Intermediate returns a CA signed by ca; SVIDs it mints chain through it.
func (ca *CA) Intermediate() *CA {
	ca.tb.Helper()
	key := NewKey(ca.tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(ca.tb),
		Subject:               pkix.Name{CommonName: "meshguard test intermediate"},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{tb: ca.tb, td: ca.td, parent: ca, cert: sign(ca.tb, tmpl, ca.cert, key.Public(), ca.key), key: key}
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Root is the self-signed root certificate at the top of ca's chain.
func (ca *CA) Root() *x509.Certificate {
	r := ca
	for r.parent != nil {
		r = r.parent
	}
	return r.cert
}

// Cert is ca's own certificate (the root or an intermediate).
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// Key is ca's own signing key.
func (ca *CA) Key() crypto.Signer { return ca.key }

// Bundle is the X.509 bundle (the root) for ca's trust domain.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.Root()})
}

// Pool is a cert pool holding the root, for plain crypto/tls clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root())
	return p
}

// Options change the leaf a CA mints; the zero value is a valid SVID.
type Options struct {
	URIs      []string           // replaces the SPIFFE ID URI SAN(s); use []string{} for none
	DNSNames  []string           // extra DNS SANs
	IPs       []net.IP           // extra IP SANs
	NotBefore time.Time          // default: an hour ago
	NotAfter  time.Time          // default: an hour from now
	ExtKey    []x509.ExtKeyUsage // default: serverAuth + clientAuth; set NoExtKey for none
	NoExtKey  bool
	IsCA      bool
	RSABits   int           // mint an RSA key of this size instead of P-256
	Key       crypto.Signer // use this key instead of a new one
	Parent    *LeafSigner   // sign with this leaf instead of the CA (a chain through a leaf)
}

// LeafSigner is a certificate and key that may be used as a (bogus) issuer.
type LeafSigner struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// SVID mints an X.509-SVID for id signed by ca, changed by opts.
func (ca *CA) SVID(id spiffeid.ID, opts Options) *x509svid.SVID {
	ca.tb.Helper()
	if opts.URIs == nil {
		opts.URIs = []string{id.String()}
	}
	certs, key := ca.Leaf(opts)
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

// Leaf mints a leaf certificate chain (leaf, then intermediates up to but not
// including the root) and its key, exactly as opts say: no validation, so
// hostile certificates can be made.
func (ca *CA) Leaf(opts Options) ([]*x509.Certificate, crypto.Signer) {
	ca.tb.Helper()
	now := time.Now()
	key := opts.Key
	if key == nil {
		if opts.RSABits > 0 {
			k, err := rsa.GenerateKey(rand.Reader, opts.RSABits)
			if err != nil {
				ca.tb.Fatalf("testca: rsa key: %v", err)
			}
			key = k
		} else {
			key = NewKey(ca.tb)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(ca.tb),
		NotBefore:             orDefault(opts.NotBefore, now.Add(-time.Hour)),
		NotAfter:              orDefault(opts.NotAfter, now.Add(time.Hour)),
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPs,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  opts.IsCA,
	}
	if opts.IsCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	switch {
	case opts.NoExtKey:
	case opts.ExtKey != nil:
		tmpl.ExtKeyUsage = opts.ExtKey
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, u := range opts.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			ca.tb.Fatalf("testca: uri %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	parentCert, parentKey := ca.cert, ca.key
	var chain []*x509.Certificate
	if opts.Parent != nil {
		parentCert, parentKey = opts.Parent.Cert, opts.Parent.Key
		chain = append(chain, opts.Parent.Cert)
	}
	leaf := sign(ca.tb, tmpl, parentCert, key.Public(), parentKey)
	certs := append([]*x509.Certificate{leaf}, chain...)
	for c := ca; c.parent != nil; c = c.parent {
		certs = append(certs, c.cert)
	}
	return certs, key
}

// TLSCertificate converts an SVID to a tls.Certificate for crypto/tls.
func TLSCertificate(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testca: ecdsa key: %v", err)
	}
	return k
}

func sign(tb testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		tb.Fatalf("testca: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testca: parse certificate: %v", err)
	}
	return cert
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("testca: serial: %v", err)
	}
	return n
}

func orDefault(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}
