package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// serverSANs are the names the CA's HTTPS certificate carries.
type serverSANs struct {
	dns []string
	ips []net.IP
}

func (s serverSANs) names() []string {
	out := append([]string(nil), s.dns...)
	for _, ip := range s.ips {
		out = append(out, ip.String())
	}
	return out
}

// parseServerSANs derives the server certificate's SANs from the listen
// address: an IP or DNS host as given; an unspecified host (":8443",
// "0.0.0.0:8443") gets localhost, the hostname and the addresses of the
// host's interfaces.
func parseServerSANs(listen string, extra []string) (serverSANs, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return serverSANs{}, fmt.Errorf("listen address %q: %w", listen, err)
	}
	var s serverSANs
	seen := map[string]bool{}
	add := func(name string) error {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			return nil
		}
		seen[name] = true
		if ip := net.ParseIP(name); ip != nil {
			s.ips = append(s.ips, ip)
			return nil
		}
		if strings.ContainsAny(name, "/:@ ") {
			return fmt.Errorf("server name %q is neither an IP address nor a DNS name", name)
		}
		s.dns = append(s.dns, strings.ToLower(name))
		return nil
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		for _, n := range []string{"localhost", "127.0.0.1", "::1"} {
			_ = add(n)
		}
		if h, err := os.Hostname(); err == nil {
			_ = add(h)
		}
		// Clients that dial an address send no SNI: cover the host's own.
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					_ = add(n.IP.String())
				}
			}
		}
	} else if err := add(host); err != nil {
		return serverSANs{}, err
	}
	for _, n := range extra {
		if err := add(n); err != nil {
			return serverSANs{}, err
		}
	}
	return s, nil
}

// serverCert is one HTTPS certificate and when to replace it.
type serverCert struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// maxSNINames bounds the certificates minted for names clients ask for.
const maxSNINames = 64

// serverCertFor picks the HTTPS certificate for a handshake: the one for
// the configured names, or, when the client asks (SNI) for a DNS name that
// is not among them, one that adds that name. Agents reach the CA by
// whatever name their network gives it (a compose service, a Kubernetes
// Service) and pin the root, so the CA answers to the name it is called
// by; only the CA can mint these certificates, and mesh peers never trust a
// DNS name.
func (s *Server) serverCertFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := ""
	if hello != nil {
		name = strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	}
	if name == "" || slices.Contains(s.sans.dns, name) || !isDNSName(name) {
		return s.serverCertificate()
	}
	return s.mintCached(name)
}

// serverCertificate returns the certificate for the configured names.
func (s *Server) serverCertificate() (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil && s.now().Before(c.renewAt) {
		return c.cert, nil
	}
	return s.mintCached("")
}

// mintCached returns the cached certificate for the configured names plus
// extra (if any), minting a new one when none is cached or two thirds of
// its life are gone.
func (s *Server) mintCached(extra string) (*tls.Certificate, error) {
	now := s.now()
	s.certMu.Lock()
	defer s.certMu.Unlock()
	var cached *serverCert
	if extra == "" {
		cached = s.cert.Load()
	} else {
		cached = s.sniCerts[extra]
	}
	if cached != nil && now.Before(cached.renewAt) {
		return cached.cert, nil
	}
	c, err := s.mintServerCert(now, extra)
	if err != nil {
		return nil, err
	}
	if extra == "" {
		s.cert.Store(c)
		return c.cert, nil
	}
	if len(s.sniCerts) >= maxSNINames {
		clear(s.sniCerts)
	}
	s.sniCerts[extra] = c
	return c.cert, nil
}

// mintServerCert issues an HTTPS certificate from the intermediate. Its
// only URI SAN is spiffe://TD/meshguard/ca and its EKU is serverAuth alone,
// so it can never pass as a workload SVID.
func (s *Server) mintServerCert(now time.Time, extra string) (*serverCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca server certificate: %w", err)
	}
	inter := s.material.Intermediate
	notBefore := now.Add(-Backdate)
	notAfter := now.Add(serverCertMaxAge)
	if notAfter.After(inter.NotAfter) {
		notAfter = inter.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca server certificate: the intermediate expired on %s", inter.NotAfter.UTC().Format(time.RFC3339))
	}
	dns := s.sans.dns
	if extra != "" {
		dns = append(slices.Clone(dns), extra)
	}
	tmpl := &x509.Certificate{
		DNSNames:              dns,
		IPAddresses:           s.sans.ips,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: s.material.TrustDomain.Name(), Path: "/meshguard/ca"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	leaf, err := createCert(tmpl, inter, &key.PublicKey, s.material.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca server certificate: %w", err)
	}
	return &serverCert{
		cert: &tls.Certificate{
			Certificate: [][]byte{leaf.Raw, inter.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		renewAt: now.Add(notAfter.Sub(now) * 2 / 3),
	}, nil
}

// isDNSName accepts lowercase host names: dot-separated labels of letters,
// digits and hyphens, not an IP address.
func isDNSName(name string) bool {
	if len(name) > 253 || net.ParseIP(name) != nil {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
