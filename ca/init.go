package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"
)

// Files of the CA directory written by Init. Operators back up the whole
// directory; DBFile (created by the server) holds the used token IDs.
const (
	RootCertFile         = "root.crt"
	RootKeyFile          = "root.key"
	IntermediateCertFile = "intermediate.crt"
	IntermediateKeyFile  = "intermediate.key"
	ProvisionerKeyFile   = "provisioner.key"
	ConfigFile           = "ca.json"
	DBFile               = "ca.db"
)

// Lifetimes of the CA certificates created by Init.
const (
	RootLifetime         = 10 * 365 * 24 * time.Hour
	IntermediateLifetime = 365 * 24 * time.Hour
)

// ProvisionerName is the name (and JWT issuer) of the JWK provisioner that
// signs join tokens.
const ProvisionerName = "meshguard-join"

// caFiles are the files whose presence means "a CA lives here".
var caFiles = []string{RootCertFile, RootKeyFile, IntermediateCertFile, IntermediateKeyFile, ProvisionerKeyFile, ConfigFile}

// InitConfig says where and for which trust domain Init creates a CA.
type InitConfig struct {
	// Dir is the CA directory; created (mode 0700) if missing.
	Dir string
	// TrustDomain is the bare trust domain name, e.g. "example.org".
	TrustDomain string
	// PasswordFile, when set, names a file whose content (trailing newline
	// removed) encrypts every private key in Dir.
	PasswordFile string
	// Force allows replacing an existing CA (its database included).
	Force bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ConfigError marks a problem with the operator's input or the CA directory
// (bad trust domain, uninitialised or unreadable directory, wrong password):
// the command line maps it to exit code 2.
type ConfigError struct{ Err error }

// Error returns the underlying message, which says what to fix.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// dirConfig is the content of ca.json: what the authority needs besides the
// certificates and keys.
type dirConfig struct {
	Version     int              `json:"version"`
	TrustDomain string           `json:"trust_domain"`
	Provisioner string           `json:"provisioner"`
	PublicKey   *jose.JSONWebKey `json:"provisioner_public_key"`
	Encrypted   bool             `json:"keys_encrypted"`
}

// ParseTrustDomain validates a bare trust domain name as given to ca init.
func ParseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	if s == "" {
		return spiffeid.TrustDomain{}, errors.New("trust domain is empty")
	}
	if strings.ContainsAny(s, ":/") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q must be a bare name like example.org (no scheme, port or path)", s)
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", s, err)
	}
	if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q has an empty label", s)
	}
	return td, nil
}

// Init creates a CA in cfg.Dir: an ECDSA P-256 root valid for ten years with
// the URI SAN spiffe://TD, an intermediate valid for one year whose name
// constraints permit only URIs of the trust domain, the JWK provisioner key
// for join tokens and ca.json. It returns the root's SHA-256 fingerprint.
// Nothing is written when the input is invalid; an existing CA is replaced
// only with Force.
func Init(cfg InitConfig) (string, error) {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if cfg.Dir == "" {
		return "", configErrorf("init ca: no directory given")
	}
	td, err := ParseTrustDomain(cfg.TrustDomain)
	if err != nil {
		return "", &ConfigError{Err: fmt.Errorf("init ca: %w", err)}
	}
	var password []byte
	if cfg.PasswordFile != "" {
		if password, err = readPassword(cfg.PasswordFile); err != nil {
			return "", &ConfigError{Err: fmt.Errorf("init ca: %w", err)}
		}
	}
	if !cfg.Force {
		for _, name := range caFiles {
			if _, err := os.Lstat(filepath.Join(cfg.Dir, name)); err == nil {
				return "", configErrorf("init ca: %s already holds a CA (%s exists); use --force to replace it", cfg.Dir, name)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return "", configErrorf("init ca: inspect %s: %w", cfg.Dir, err)
			}
		}
	}

	m, err := newMaterial(td, now())
	if err != nil {
		return "", fmt.Errorf("init ca: %w", err)
	}
	files, err := m.encode(password)
	if err != nil {
		return "", fmt.Errorf("init ca: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return "", fmt.Errorf("init ca: create %s: %w", cfg.Dir, err)
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(cfg.Dir, f.name), f.data, f.mode); err != nil {
			return "", fmt.Errorf("init ca: %w", err)
		}
	}
	if cfg.Force {
		// The old database belongs to the old provisioner and certificates.
		if err := os.Remove(filepath.Join(cfg.Dir, DBFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("init ca: remove old database: %w", err)
		}
	}
	return Fingerprint(m.root), nil
}

// Fingerprint is the lowercase hex SHA-256 of the certificate's DER, without
// colons: the form `step certificate fingerprint` prints and agents pin with
// --ca-fingerprint.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// material is a freshly generated CA.
type material struct {
	td           spiffeid.TrustDomain
	root         *x509.Certificate
	rootKey      crypto.Signer
	intermediate *x509.Certificate
	interKey     crypto.Signer
	jwk          *jose.JSONWebKey
}

func newMaterial(td spiffeid.TrustDomain, now time.Time) (*material, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate intermediate key: %w", err)
	}
	tdURI := &url.URL{Scheme: "spiffe", Host: td.Name()}
	notBefore := now.Add(-time.Minute).Truncate(time.Second)

	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"meshguard"}, CommonName: "meshguard root CA " + td.Name()},
		URIs:                  []*url.URL{tdURI},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	root, err := createCert(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	interTmpl := &x509.Certificate{
		Subject:                     pkix.Name{Organization: []string{"meshguard"}, CommonName: "meshguard intermediate CA " + td.Name()},
		URIs:                        []*url.URL{tdURI},
		NotBefore:                   notBefore,
		NotAfter:                    notBefore.Add(IntermediateLifetime),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true, // marks the whole name constraints extension critical
	}
	inter, err := createCert(interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create intermediate certificate: %w", err)
	}
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("generate provisioner key: %w", err)
	}
	return &material{td: td, root: root, rootKey: rootKey, intermediate: inter, interKey: interKey, jwk: jwk}, nil
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

type dirFile struct {
	name string
	data []byte
	mode os.FileMode
}

// encode serialises the material into the directory's files.
func (m *material) encode(password []byte) ([]dirFile, error) {
	keyPEM := func(k crypto.Signer) ([]byte, error) {
		opts := []pemutil.Options{pemutil.WithPKCS8(true)}
		if len(password) > 0 {
			opts = append(opts, pemutil.WithPassword(password))
		}
		block, err := pemutil.Serialize(k, opts...)
		if err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
		return pem.EncodeToMemory(block), nil
	}
	rootKey, err := keyPEM(m.rootKey)
	if err != nil {
		return nil, err
	}
	interKey, err := keyPEM(m.interKey)
	if err != nil {
		return nil, err
	}
	var provKey []byte
	if len(password) > 0 {
		jwe, err := jose.EncryptJWK(m.jwk, password)
		if err != nil {
			return nil, fmt.Errorf("encrypt provisioner key: %w", err)
		}
		s, err := jwe.CompactSerialize()
		if err != nil {
			return nil, fmt.Errorf("encrypt provisioner key: %w", err)
		}
		provKey = []byte(s + "\n")
	} else if provKey, err = json.MarshalIndent(m.jwk, "", "  "); err != nil {
		return nil, fmt.Errorf("encode provisioner key: %w", err)
	}
	pub := m.jwk.Public()
	conf, err := json.MarshalIndent(dirConfig{
		Version:     1,
		TrustDomain: m.td.Name(),
		Provisioner: ProvisionerName,
		PublicKey:   &pub,
		Encrypted:   len(password) > 0,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ConfigFile, err)
	}
	certPEM := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return []dirFile{
		{RootKeyFile, rootKey, 0o600},
		{IntermediateKeyFile, interKey, 0o600},
		{ProvisionerKeyFile, provKey, 0o600},
		{RootCertFile, certPEM(m.root), 0o644},
		{IntermediateCertFile, certPEM(m.intermediate), 0o644},
		{ConfigFile, append(conf, '\n'), 0o644},
	}, nil
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so a reader never sees half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readPassword reads a password file; one trailing newline is not part of
// the password.
func readPassword(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("password file %s is empty", path)
	}
	return b, nil
}
