package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshguard/meshguard/registry"
)

// Files an agent keeps in its --data-dir (written by the identity package):
// svid.pem holds the private key and the certificate chain, bundle.pem the
// trust anchors.
const (
	dataDirSVID   = "svid.pem"
	dataDirBundle = "bundle.pem"
)

// cmdRegistryList prints the registry: services, endpoints, routes, owners
// and lease expiry, as a table or (--json) as the API's snapshot document.
//
// The registry API takes only an SVID as credential, so the command needs
// one: --svid-cert/--svid-key (PEM files; the same file may hold both), or
// --data-dir of an agent. The CA is trusted through exactly one of
// --bundle (PEM roots), --ca-fingerprint (the root's SHA-256, as printed by
// `ca init`) or the agent's --data-dir.
func cmdRegistryList(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("registry list", env)
	caURL := fs.String("ca", "", "CA URL, https://host:port")
	fingerprint := fs.String("ca-fingerprint", "", "SHA-256 fingerprint of the CA root (hex)")
	bundle := fs.String("bundle", "", "PEM file of the CA root certificate(s)")
	svidCert := fs.String("svid-cert", "", "PEM file with the caller's SVID certificate chain")
	svidKey := fs.String("svid-key", "", "PEM file with the caller's SVID private key")
	dataDir := fs.String("data-dir", "", "an agent's data directory (svid.pem, bundle.pem) instead of --svid-cert/--svid-key/--bundle")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "ca", *caURL); err != nil {
		return err
	}
	u, err := url.Parse(*caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return usagef("registry list: --ca %q: want https://host:port", *caURL)
	}
	if *timeout <= 0 {
		return usagef("registry list: --timeout must be positive")
	}
	certFile, keyFile := *svidCert, *svidKey
	if (certFile == "") != (keyFile == "") {
		return usagef("registry list: give both --svid-cert and --svid-key")
	}
	if certFile == "" && *dataDir == "" {
		return usagef("registry list: the registry needs an SVID: give --svid-cert and --svid-key, or --data-dir of an agent")
	}
	if certFile == "" {
		certFile = filepath.Join(*dataDir, dataDirSVID)
		keyFile = certFile
	}
	trust := 0
	for _, v := range []string{*fingerprint, *bundle} {
		if v != "" {
			trust++
		}
	}
	if trust > 1 {
		return usagef("registry list: give only one of --bundle and --ca-fingerprint")
	}
	if trust == 0 {
		if *dataDir == "" {
			return usagef("registry list: say how to trust the CA: --bundle FILE, --ca-fingerprint HEX or --data-dir DIR")
		}
		*bundle = filepath.Join(*dataDir, dataDirBundle)
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return usagef("registry list: %v", err)
	}
	var roots *x509.CertPool
	if *bundle != "" {
		if roots, err = loadRoots(*bundle); err != nil {
			return usagef("registry list: %v", err)
		}
	} else {
		fp := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(*fingerprint), ":", ""))
		if b, err := hex.DecodeString(fp); err != nil || len(b) != sha256.Size {
			return usagef("registry list: --ca-fingerprint %q: want the 64 hex digits printed by `meshguard ca init`", *fingerprint)
		}
		root, err := fetchRoot(ctx, u, fp)
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		roots.AddCert(root)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert}},
		ForceAttemptHTTP2: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	client, err := registry.NewClient(&http.Client{Transport: tr}, *caURL)
	if err != nil {
		return usagef("registry list: %v", err)
	}
	snap, err := client.List(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(snap)
	}
	return printRegistryTable(env.stdout, snap, time.Now())
}

// printRegistryTable writes one line per endpoint, grouped by service.
func printRegistryTable(w io.Writer, snap registry.Snapshot, now time.Time) error {
	entries := append([]registry.Entry(nil), snap.Entries...)
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Service != entries[j].Service {
			return entries[i].Service < entries[j].Service
		}
		return entries[i].Address < entries[j].Address
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tENDPOINT\tROUTES\tOWNER\tWEIGHT\tLABELS\tLEASE EXPIRES")
	for _, e := range entries {
		routes := strings.Join(e.Routes, ",")
		if routes == "" {
			routes = "-"
		}
		var labels []string
		for k, v := range e.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		lbl := strings.Join(labels, ",")
		if lbl == "" {
			lbl = "-"
		}
		exp := "-"
		if !e.Expires.IsZero() {
			exp = fmt.Sprintf("%s (in %s)", e.Expires.UTC().Format(time.RFC3339), e.Expires.Sub(now).Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Service, e.Address, routes, e.SPIFFEID, e.Weight, lbl, exp)
	}
	fmt.Fprintf(tw, "\n%d endpoints at revision %d\n", len(entries), snap.Revision)
	return tw.Flush()
}

// loadKeyPair reads a PEM certificate chain and key (possibly one file).
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	var out tls.Certificate
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return out, fmt.Errorf("read SVID: %w", err)
	}
	keyPEM := certPEM
	if keyFile != certFile {
		if keyPEM, err = os.ReadFile(keyFile); err != nil {
			return out, fmt.Errorf("read SVID key: %w", err)
		}
	}
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			out.Certificate = append(out.Certificate, b.Bytes)
		}
	}
	for rest := keyPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			k, err := parsePrivateKey(b)
			if err != nil {
				return out, fmt.Errorf("read SVID key %s: %w", keyFile, err)
			}
			out.PrivateKey = k
		}
	}
	if len(out.Certificate) == 0 {
		return out, fmt.Errorf("read SVID %s: no CERTIFICATE block", certFile)
	}
	if out.PrivateKey == nil {
		return out, fmt.Errorf("read SVID key %s: no PRIVATE KEY block", keyFile)
	}
	leaf, err := x509.ParseCertificate(out.Certificate[0])
	if err != nil {
		return out, fmt.Errorf("read SVID %s: %w", certFile, err)
	}
	pub, ok := out.PrivateKey.(interface{ Public() crypto.PublicKey })
	if !ok {
		return out, fmt.Errorf("read SVID key %s: unsupported key", keyFile)
	}
	if eq, ok := pub.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(leaf.PublicKey) {
		return out, fmt.Errorf("read SVID: the key in %s does not match the certificate in %s", keyFile, certFile)
	}
	out.Leaf = leaf
	return out, nil
}

func parsePrivateKey(b *pem.Block) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key encoding")
}

// loadRoots reads a PEM bundle of trust anchors.
func loadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read bundle %s: no PEM certificate", file)
	}
	return pool, nil
}

// fetchRoot gets the CA root named by fingerprint from the CA (step-ca's
// GET /root/<sha256>) over an unverified connection and accepts it only if
// its SHA-256 is the fingerprint: the fingerprint is the trust.
func fetchRoot(ctx context.Context, base *url.URL, fp string) (*x509.Certificate, error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // pinned by fingerprint below
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/root/" + fp
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch CA root: %w", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CA root: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch CA root: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch CA root: status %d", resp.StatusCode)
	}
	var rr struct {
		CA string `json:"ca"`
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, fmt.Errorf("fetch CA root: decode answer: %w", err)
	}
	blk, _ := pem.Decode([]byte(rr.CA))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("fetch CA root: answer holds no certificate")
	}
	sum := sha256.Sum256(blk.Bytes)
	if hex.EncodeToString(sum[:]) != fp {
		return nil, fmt.Errorf("fetch CA root: the CA's root has fingerprint %x, not the pinned %s", sum, fp)
	}
	return x509.ParseCertificate(blk.Bytes)
}
