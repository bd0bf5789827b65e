package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
)

// Authority is what a CA directory holds for serving: the trust domain, the
// root, the intermediate with its signer, and the provisioner's public key.
type Authority struct {
	TrustDomain  spiffeid.TrustDomain
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	Signer       crypto.Signer
	Provisioner  *jose.JSONWebKey // public key
}

// LoadRoot reads the root certificate of the CA in dir, e.g. to print its
// fingerprint or to build a trust bundle in tests.
func LoadRoot(dir string) (*x509.Certificate, error) {
	if err := checkInitialised(dir, RootCertFile); err != nil {
		return nil, err
	}
	return readCert(filepath.Join(dir, RootCertFile))
}

// LoadTrustDomain reads the trust domain of the CA in dir.
func LoadTrustDomain(dir string) (spiffeid.TrustDomain, error) {
	if err := checkInitialised(dir); err != nil {
		return spiffeid.TrustDomain{}, err
	}
	conf, err := readDirConfig(dir)
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	return ParseTrustDomain(conf.TrustDomain)
}

// LoadAuthority reads everything ca serve needs from dir, without opening
// or writing anything: callers use it to validate a directory before they
// create state next to it. Every failure is a *ConfigError: the operator
// has to fix the directory or the password. The root key and the
// provisioner key are not needed (and may be kept elsewhere).
func LoadAuthority(dir, passwordFile string) (*Authority, error) {
	if err := checkInitialised(dir, RootCertFile, IntermediateCertFile, IntermediateKeyFile); err != nil {
		return nil, err
	}
	conf, err := readDirConfig(dir)
	if err != nil {
		return nil, err
	}
	td, err := ParseTrustDomain(conf.TrustDomain)
	if err != nil {
		return nil, configErrorf("load ca: %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if conf.PublicKey == nil || !conf.PublicKey.Valid() || !conf.PublicKey.IsPublic() {
		return nil, configErrorf("load ca: %s: no valid provisioner public key", filepath.Join(dir, ConfigFile))
	}
	password, err := passwordFor(conf, passwordFile)
	if err != nil {
		return nil, err
	}
	root, err := readCert(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, err
	}
	inter, err := readCert(filepath.Join(dir, IntermediateCertFile))
	if err != nil {
		return nil, err
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, configErrorf("load ca: %s is not signed by %s: %w", IntermediateCertFile, RootCertFile, err)
	}
	signer, err := readSigner(filepath.Join(dir, IntermediateKeyFile), password)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(signer.Public(), inter.PublicKey) {
		return nil, configErrorf("load ca: %s does not match %s", IntermediateKeyFile, IntermediateCertFile)
	}
	return &Authority{TrustDomain: td, Root: root, Intermediate: inter, Signer: signer, Provisioner: conf.PublicKey}, nil
}

// loadProvisionerKey reads the private JWK that signs join tokens.
func loadProvisionerKey(dir, passwordFile string) (*dirConfig, *jose.JSONWebKey, error) {
	if err := checkInitialised(dir, ProvisionerKeyFile); err != nil {
		return nil, nil, err
	}
	conf, err := readDirConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	password, err := passwordFor(conf, passwordFile)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, ProvisionerKeyFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, configErrorf("load provisioner key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] != '{' {
		if password == nil {
			return nil, nil, configErrorf("load provisioner key: %s is encrypted; give --password-file", path)
		}
		if b, err = jose.Decrypt(b, jose.WithPassword(password)); err != nil {
			return nil, nil, configErrorf("load provisioner key %s: %w", path, err)
		}
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(b, &jwk); err != nil {
		return nil, nil, configErrorf("load provisioner key %s: %w", path, err)
	}
	if !jwk.Valid() || jwk.IsPublic() {
		return nil, nil, configErrorf("load provisioner key %s: not a private key", path)
	}
	if conf.PublicKey == nil || conf.PublicKey.KeyID != jwk.KeyID {
		return nil, nil, configErrorf("load provisioner key %s: does not match %s", path, ConfigFile)
	}
	return conf, &jwk, nil
}

// checkInitialised refuses a directory that does not hold a CA (ca.json and
// the given files), naming the first missing file so the operator knows
// what to run.
func checkInitialised(dir string, files ...string) error {
	if dir == "" {
		return configErrorf("no CA directory given")
	}
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return configErrorf("CA directory %s does not exist; run `meshguard ca init --dir %s --trust-domain TD` first", dir, dir)
		}
		return configErrorf("CA directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return configErrorf("CA directory %s is not a directory", dir)
	}
	for _, name := range append([]string{ConfigFile}, files...) {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return configErrorf("%s is not an initialised CA directory (%s is missing); run `meshguard ca init --dir %s --trust-domain TD` first", dir, name, dir)
			}
			return configErrorf("CA directory %s: %w", dir, err)
		}
	}
	return nil
}

func readDirConfig(dir string) (*dirConfig, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("read CA config: %w", err)
	}
	var conf dirConfig
	if err := json.Unmarshal(b, &conf); err != nil {
		return nil, configErrorf("read CA config %s: %w", path, err)
	}
	if conf.Version != 1 {
		return nil, configErrorf("read CA config %s: unsupported version %d", path, conf.Version)
	}
	return &conf, nil
}

func passwordFor(conf *dirConfig, passwordFile string) ([]byte, error) {
	switch {
	case conf.Encrypted && passwordFile == "":
		return nil, configErrorf("the CA keys are encrypted; give --password-file")
	case passwordFile == "":
		return nil, nil
	}
	p, err := readPassword(passwordFile)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	return p, nil
}

func readCert(path string) (*x509.Certificate, error) {
	certs, err := pemutil.ReadCertificateBundle(path)
	if err != nil {
		return nil, configErrorf("read certificate %s: %w", path, err)
	}
	if len(certs) != 1 {
		return nil, configErrorf("read certificate %s: want one certificate, found %d", path, len(certs))
	}
	return certs[0], nil
}

func readSigner(path string, password []byte) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("read key: %w", err)
	}
	var opts []pemutil.Options
	if password != nil {
		opts = append(opts, pemutil.WithPassword(password))
	}
	k, err := pemutil.Parse(b, opts...)
	if err != nil {
		return nil, configErrorf("read key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, configErrorf("read key %s: %T is not a private key", path, k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
