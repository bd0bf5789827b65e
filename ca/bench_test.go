package ca

import (
	"testing"
)

// BenchmarkSign measures one bootstrap over loopback TLS (HTTP/2, kept
// alive): token verification and its bbolt write, signing, and the
// re-verification of the certificate.
// Run: go test -run XXX -bench . -benchtime 300x ./ca/
func BenchmarkSign(b *testing.B) {
	dir := newCADir(b)
	r := startServer(b, dir, func(c *Config) { c.Rate, c.Burst = 1e9, 1<<30 })
	const id = "spiffe://example.org/svc/bench"
	tokens := make([]string, b.N)
	csrs := make([]string, b.N)
	key := newKey(b)
	for i := range tokens {
		tokens[i] = mustToken(b, dir, id)
		csrs[i] = newCSR(b, key, "", id)
	}
	client := r.client(b, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, _, raw := post(b, client, r.url+"/1.0/sign", map[string]string{"csr": csrs[i], "ott": tokens[i]}); code != 201 {
			b.Fatalf("sign: %d %s", code, raw)
		}
	}
}

// BenchmarkRekey measures one rotation over mTLS.
func BenchmarkRekey(b *testing.B) {
	dir := newCADir(b)
	r := startServer(b, dir, func(c *Config) { c.Rate, c.Burst = 1e9, 1<<30 })
	const id = "spiffe://example.org/svc/bench"
	key := newKey(b)
	code, resp, raw := r.signWith(b, mustToken(b, dir, id), key, id)
	if code != 201 {
		b.Fatalf("sign: %d %s", code, raw)
	}
	client := r.client(b, tlsCert(b, resp, key))
	csrs := make([]string, b.N)
	for i := range csrs {
		csrs[i] = newCSR(b, newKey(b), "")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, _, raw := post(b, client, r.url+"/1.0/rekey", map[string]string{"csr": csrs[i]}); code != 201 {
			b.Fatalf("rekey: %d %s", code, raw)
		}
	}
}
