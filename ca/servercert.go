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
// "0.0.0.0:8443") gets localhost, the loopback addresses and the hostname.
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

// serverCert is the current HTTPS certificate and when to replace it.
type serverCert struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// serverCertificate returns the HTTPS certificate, minting a new one from
// the intermediate when none exists or two thirds of its life are gone.
// Its only URI SAN is spiffe://TD/meshguard/ca and its EKU is serverAuth
// alone, so it can never pass as a workload SVID.
func (s *Server) serverCertificate() (*tls.Certificate, error) {
	now := s.now()
	if c := s.cert.Load(); c != nil && now.Before(c.renewAt) {
		return c.cert, nil
	}
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if c := s.cert.Load(); c != nil && now.Before(c.renewAt) {
		return c.cert, nil
	}
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
	tmpl := &x509.Certificate{
		DNSNames:              s.sans.dns,
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
	c := &serverCert{
		cert: &tls.Certificate{
			Certificate: [][]byte{leaf.Raw, inter.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		renewAt: now.Add(notAfter.Sub(now) * 2 / 3),
	}
	s.cert.Store(c)
	return c.cert, nil
}
