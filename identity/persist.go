package identity

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files in --data-dir. The key and its certificate chain share one file so
// that a crash can never leave a key beside someone else's certificate.
const (
	svidFile   = "svid.pem"
	bundleFile = "bundle.pem"
)

// errNotPersisted means the data directory holds no SVID (first start).
var errNotPersisted = errors.New("no persisted SVID")

// writeFileAtomic writes data to path with mode 0600 through a temporary
// file in the same directory and a rename, so readers see the old or the new
// content and never a torn one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable; best effort on filesystems without directory sync
		d.Close()
	}
	return nil
}

// ensureDataDir creates the data directory (0700) if needed.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return nil
}

// saveSVID persists the key (PKCS#8) followed by the certificate chain.
func saveSVID(dir string, svid *x509svid.SVID) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("persist SVID: marshal key: %w", err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, c := range svid.Certificates {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return writeFileAtomic(filepath.Join(dir, svidFile), buf.Bytes())
}

// loadSVID reads back what saveSVID wrote. It checks the shape only (key
// matches leaf); the caller verifies the chain, the ID and the validity.
func loadSVID(dir string) (*x509svid.SVID, error) {
	path := filepath.Join(dir, svidFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotPersisted
	}
	if err != nil {
		return nil, fmt.Errorf("load persisted SVID: %w", err)
	}
	var key crypto.Signer
	var certs []*x509.Certificate
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PRIVATE KEY":
			if key != nil {
				return nil, fmt.Errorf("load persisted SVID %s: more than one private key", path)
			}
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("load persisted SVID %s: parse key: %w", path, err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("load persisted SVID %s: key of type %T cannot sign", path, k)
			}
			key = s
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("load persisted SVID %s: parse certificate: %w", path, err)
			}
			certs = append(certs, c)
		default:
			return nil, fmt.Errorf("load persisted SVID %s: unexpected PEM block %q", path, block.Type)
		}
	}
	switch {
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, fmt.Errorf("load persisted SVID %s: not PEM (corrupt file?)", path)
	case key == nil:
		return nil, fmt.Errorf("load persisted SVID %s: no private key", path)
	case len(certs) == 0:
		return nil, fmt.Errorf("load persisted SVID %s: no certificate", path)
	case !samePublicKey(certs[0], key):
		return nil, fmt.Errorf("load persisted SVID %s: the key does not match the certificate", path)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("load persisted SVID %s: %w", path, err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// saveBundle persists the trust anchors.
func saveBundle(dir string, roots []*x509.Certificate) error {
	var buf bytes.Buffer
	for _, c := range roots {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return writeFileAtomic(filepath.Join(dir, bundleFile), buf.Bytes())
}

// loadBundle reads the persisted trust anchors; errNotPersisted if none.
func loadBundle(dir string) ([]*x509.Certificate, error) {
	path := filepath.Join(dir, bundleFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNotPersisted
	}
	if err != nil {
		return nil, fmt.Errorf("load persisted bundle: %w", err)
	}
	certs, err := parsePEMCerts(b)
	if err != nil {
		return nil, fmt.Errorf("load persisted bundle %s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("load persisted bundle %s: no certificate", path)
	}
	return certs, nil
}
