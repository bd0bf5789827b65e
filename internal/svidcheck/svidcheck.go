// Package svidcheck holds the strict X.509-SVID rules meshguard applies to
// every peer, on top of chain verification. go-spiffe's verifier alone
// accepts a trust-domain-only ID, a codeSigning-only EKU and RSA-1024 keys;
// meshguard refuses them. identity, proxy and the CA's registry API all use
// this one check, so it lives here and imports no meshguard package.
package svidcheck

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// MinRSABits is the smallest RSA modulus accepted in a peer SVID.
const MinRSABits = 2048

// Leaf applies the strict rules to a leaf certificate and returns its SPIFFE
// ID: exactly one URI SAN, a spiffe:// ID with a non-empty path, not a CA and
// no certificate-signing key usage, an extended key usage that (when present)
// includes both clientAuth and serverAuth, and a key that is ECDSA P-256/P-384,
// Ed25519 or RSA of at least 2048 bits.
func Leaf(leaf *x509.Certificate) (spiffeid.ID, error) {
	if leaf == nil {
		return spiffeid.ID{}, errors.New("svid check: no certificate")
	}
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("svid check: certificate has %d URI SANs, want exactly one", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("svid check: URI SAN is not a SPIFFE ID: %w", err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("svid check: %s is a trust domain ID, not a workload ID", id)
	}
	if leaf.IsCA {
		return spiffeid.ID{}, errors.New("svid check: leaf certificate is a CA")
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return spiffeid.ID{}, errors.New("svid check: leaf certificate may sign certificates")
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		var client, server bool
		for _, u := range leaf.ExtKeyUsage {
			client = client || u == x509.ExtKeyUsageClientAuth
			server = server || u == x509.ExtKeyUsageServerAuth
		}
		if !client || !server {
			return spiffeid.ID{}, errors.New("svid check: extended key usage must include clientAuth and serverAuth")
		}
	}
	switch pub := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return spiffeid.ID{}, fmt.Errorf("svid check: ECDSA curve %s not accepted", pub.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if pub.N.BitLen() < MinRSABits {
			return spiffeid.ID{}, fmt.Errorf("svid check: RSA key of %d bits, want at least %d", pub.N.BitLen(), MinRSABits)
		}
	case ed25519.PublicKey:
	default:
		return spiffeid.ID{}, fmt.Errorf("svid check: public key type %T not accepted", leaf.PublicKey)
	}
	return id, nil
}

// Strict wraps a go-spiffe authorizer so that the strict leaf rules run first,
// on the verified chain, during the TLS handshake. A peer refused here never
// reaches the authorizer, the policy or the application.
func Strict(next tlsconfig.Authorizer) tlsconfig.Authorizer {
	return func(id spiffeid.ID, verifiedChains [][]*x509.Certificate) error {
		if len(verifiedChains) == 0 || len(verifiedChains[0]) == 0 {
			return errors.New("svid check: no verified chain")
		}
		leafID, err := Leaf(verifiedChains[0][0])
		if err != nil {
			return err
		}
		if leafID != id {
			return fmt.Errorf("svid check: verified ID %s differs from the leaf's %s", id, leafID)
		}
		return next(id, verifiedChains)
	}
}
