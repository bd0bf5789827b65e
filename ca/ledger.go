package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/jose"
)

// TokenLedger records used join-token IDs where every replica of the CA
// sees them. smallstep's bbolt database already refuses a replay on one
// CA process; a ledger shared by several `ca serve` replicas (etcd) keeps
// a token single use across all of them.
type TokenLedger interface {
	// Use records the token ID as used until expiry and reports whether
	// this was its first use. It must be atomic across replicas.
	Use(ctx context.Context, tokenID string, expiry time.Time) (first bool, err error)
}

// errTokenUsed is returned when the ledger has seen the token before.
var errTokenUsed = errors.New("the token was already used; join tokens are single use")

// spendToken verifies the token's signature with our provisioner key and
// records its ID in the shared ledger. Tokens that do not verify are left
// for smallstep to refuse (and never reach the ledger, so nobody can fill
// it with junk).
func (s *Server) spendToken(ctx context.Context, ott string) error {
	if s.cfg.TokenLedger == nil {
		return nil
	}
	tok, err := jose.ParseSigned(ott)
	if err != nil {
		return nil // smallstep refuses it with the usual message
	}
	var claims jose.Claims
	if err := tok.Claims(s.material.Provisioner, &claims); err != nil {
		return nil
	}
	if claims.ID == "" || claims.Expiry == nil {
		return nil
	}
	exp := claims.Expiry.Time()
	if s.now().After(exp.Add(time.Minute)) { // smallstep's leeway
		return nil
	}
	first, err := s.cfg.TokenLedger.Use(ctx, s.material.Provisioner.KeyID+"/"+claims.ID, exp.Add(time.Minute))
	if err != nil {
		return fmt.Errorf("record token use: %w", err)
	}
	if !first {
		return errTokenUsed
	}
	return nil
}
