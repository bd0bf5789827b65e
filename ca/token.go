package ca

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/jose"
)

// TokenAudience is the audience of every join token. smallstep accepts it
// for /1.0/sign on any address (it is its legacy "step-certificate-authority"
// audience), so a token does not depend on the URL agents use to reach the
// CA. A token is still bound to one CA: only that CA's provisioner key
// verifies it.
const TokenAudience = "step-certificate-authority"

// Limits on a join token's lifetime.
const (
	DefaultTokenTTL = 10 * time.Minute
	MaxTokenTTL     = 24 * time.Hour
)

// TokenConfig describes one join token.
type TokenConfig struct {
	Dir          string
	ID           spiffeid.ID
	TTL          time.Duration
	PasswordFile string
	Now          func() time.Time // nil means time.Now
}

// CreateToken mints a single-use join token for id, valid for ttl, signed
// with the provisioner key of the CA in dir (which must not be encrypted;
// use NewToken with a PasswordFile otherwise).
func CreateToken(dir string, id spiffeid.ID, ttl time.Duration) (string, error) {
	return NewToken(TokenConfig{Dir: dir, ID: id, TTL: ttl})
}

// NewToken mints a single-use join token: a JWT signed by the CA's JWK
// provisioner with sub and sans set to the SPIFFE ID, the audience
// TokenAudience and a random jti that the CA records on first use. The ID
// must be spiffe://<the CA's trust domain>/svc/<name>.
func NewToken(cfg TokenConfig) (string, error) {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if cfg.TTL <= 0 || cfg.TTL > MaxTokenTTL {
		return "", configErrorf("create token: ttl %s out of range (0, %s]", cfg.TTL, MaxTokenTTL)
	}
	conf, key, err := loadProvisionerKey(cfg.Dir, cfg.PasswordFile)
	if err != nil {
		return "", err
	}
	td, err := ParseTrustDomain(conf.TrustDomain)
	if err != nil {
		return "", configErrorf("create token: %s: %w", ConfigFile, err)
	}
	if err := CheckWorkloadID(td, cfg.ID); err != nil {
		return "", &ConfigError{Err: fmt.Errorf("create token: %w", err)}
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	t := now()
	claims := struct {
		jose.Claims
		SANs []string `json:"sans"`
	}{
		Claims: jose.Claims{
			ID:        hex.EncodeToString(jti),
			Issuer:    conf.Provisioner,
			Subject:   cfg.ID.String(),
			Audience:  jose.Audience{TokenAudience},
			IssuedAt:  jose.NewNumericDate(t),
			NotBefore: jose.NewNumericDate(t),
			Expiry:    jose.NewNumericDate(t.Add(cfg.TTL)),
		},
		SANs: []string{cfg.ID.String()},
	}
	tok, err := signJWT(key, claims)
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return tok, nil
}

// signJWT signs claims with the provisioner key, with the key ID in the
// header as smallstep looks it up.
func signJWT(key *jose.JSONWebKey, claims any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// CheckWorkloadID accepts exactly the workload IDs meshguard issues:
// spiffe://<td>/svc/<name>, with a single non-empty name segment.
func CheckWorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if id.IsZero() {
		return fmt.Errorf("no SPIFFE ID given")
	}
	if id.TrustDomain() != td {
		return fmt.Errorf("SPIFFE ID %s is not in the trust domain %s", id, td)
	}
	name, ok := strings.CutPrefix(id.Path(), "/svc/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("SPIFFE ID %s must have the form spiffe://%s/svc/NAME", id, td.Name())
	}
	return nil
}
