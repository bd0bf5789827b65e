package svidcheck_test

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

func TestLeaf(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	id := spiffeid.RequireFromPath(td, "/svc/web")
	tests := []struct {
		name    string
		opts    testca.Options
		wantErr string
	}{
		{name: "valid", opts: testca.Options{}},
		{name: "no EKU is fine", opts: testca.Options{NoExtKey: true}},
		{name: "RSA 2048", opts: testca.Options{RSABits: 2048}},
		{name: "no URI SAN", opts: testca.Options{URIs: []string{}}, wantErr: "0 URI SANs"},
		{name: "two URI SANs", opts: testca.Options{URIs: []string{"spiffe://example.org/svc/a", "spiffe://example.org/svc/b"}}, wantErr: "2 URI SANs"},
		{name: "non-spiffe URI", opts: testca.Options{URIs: []string{"https://example.org/svc/web"}}, wantErr: "not a SPIFFE ID"},
		{name: "trust domain only", opts: testca.Options{URIs: []string{"spiffe://example.org"}}, wantErr: "trust domain ID"},
		{name: "CA leaf", opts: testca.Options{IsCA: true}, wantErr: "is a CA"},
		{name: "codeSigning only", opts: testca.Options{ExtKey: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}, wantErr: "clientAuth and serverAuth"},
		{name: "clientAuth only", opts: testca.Options{ExtKey: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, wantErr: "clientAuth and serverAuth"},
		{name: "RSA 1024", opts: testca.Options{RSABits: 1024}, wantErr: "RSA key of 1024 bits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certs, _ := ca.Leaf(withDefaultURI(tc.opts, id))
			got, err := svidcheck.Leaf(certs[0])
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Leaf: %v", err)
				}
				if got != id {
					t.Fatalf("ID = %s, want %s", got, id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestStrictRunsBeforeNext(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	called := false
	next := tlsconfig.Authorizer(func(spiffeid.ID, [][]*x509.Certificate) error { called = true; return nil })
	certs, _ := ca.Leaf(testca.Options{URIs: []string{"spiffe://example.org"}})
	if err := svidcheck.Strict(next)(td.ID(), [][]*x509.Certificate{certs}); err == nil {
		t.Fatal("trust-domain-only leaf accepted")
	}
	if called {
		t.Fatal("next authorizer ran for a refused leaf")
	}
	if err := svidcheck.Strict(next)(td.ID(), nil); err == nil {
		t.Fatal("empty chain accepted")
	}
}

func withDefaultURI(o testca.Options, id spiffeid.ID) testca.Options {
	if o.URIs == nil {
		o.URIs = []string{id.String()}
	}
	return o
}
