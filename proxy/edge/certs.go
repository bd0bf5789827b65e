package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// CertReloader serves the edge's public TLS certificate from files and picks
// up new files (e.g. from an ACME client) without a restart. A new pair that
// fails to load is refused and the current one stays.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]
	stamp             string // size and mtime of both files at the last load
}

// LoadCertificate loads the pair once; a bad pair is an error.
func LoadCertificate(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Run checks the files every interval until ctx is done.
func (c *CertReloader) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			changed, err := c.reload()
			switch {
			case err != nil:
				c.log.Error("edge TLS certificate not reloaded; keeping the current one", "error", err.Error())
			case changed:
				c.log.Info("edge TLS certificate reloaded", "cert", c.certFile)
			}
		}
	}
}

// reload loads the pair if the files changed since the last load.
func (c *CertReloader) reload() (bool, error) {
	stamp, err := fileStamp(c.certFile, c.keyFile)
	if err != nil {
		return false, err
	}
	if stamp == c.stamp {
		return false, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return false, fmt.Errorf("loading --tls-cert %s and --tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil {
		return false, errors.New("edge certificate: no leaf")
	}
	if time.Now().After(pair.Leaf.NotAfter) {
		return false, fmt.Errorf("edge certificate %s expired at %s", c.certFile, pair.Leaf.NotAfter.Format(time.RFC3339))
	}
	c.cur.Store(&pair)
	c.stamp = stamp
	return true, nil
}

func fileStamp(files ...string) (string, error) {
	s := ""
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("edge certificate: %w", err)
		}
		s += fmt.Sprintf("%d.%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
