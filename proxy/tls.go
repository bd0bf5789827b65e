package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ALPN protocol IDs.
const (
	alpnH2    = "h2"
	alpnHTTP1 = "http/1.1"
)

// serverTLS is the inbound listener's config: TLS 1.3 only, a client SVID
// required, chain-verified against the live bundle, strict SVID rules, and
// membership of the trust domain. The SVID and bundle are read at every
// handshake, so rotation needs no restart. Session tickets are off so that a
// bundle change is never bypassed by resumption.
func serverTLS(src Source, td spiffeid.TrustDomain, onHandshake func()) *tls.Config {
	c := tlsconfig.MTLSServerConfig(src, src, svidcheck.Strict(tlsconfig.AuthorizeMemberOf(td)))
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = tls.VersionTLS13
	c.NextProtos = []string{alpnH2, alpnHTTP1}
	c.SessionTicketsDisabled = true
	c.Renegotiation = tls.RenegotiateNever
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("inbound handshake: no client certificate")
		}
		onHandshake()
		return nil
	}
	return c
}

// clientTLS is the config for one dial to a peer endpoint: TLS 1.3, h2 only,
// our live SVID, and a server that must present exactly id.
func clientTLS(src Source, id spiffeid.ID) *tls.Config {
	c := tlsconfig.MTLSClientConfig(src, src, svidcheck.Strict(tlsconfig.AuthorizeID(id)))
	c.MinVersion = tls.VersionTLS13
	c.MaxVersion = tls.VersionTLS13
	c.NextProtos = []string{alpnH2}
	c.Renegotiation = tls.RenegotiateNever
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != alpnH2 {
			return fmt.Errorf("outbound handshake with %s: peer did not negotiate h2 (got %q)", id, cs.NegotiatedProtocol)
		}
		return nil
	}
	return c
}
