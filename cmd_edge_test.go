package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEdgeBadFlags(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	base := []string{"edge", "--ca", "https://127.0.0.1:1", "--ca-fingerprint", fp, "--token", "t", "--service", "edge",
		"--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--listen", "127.0.0.1:0"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "nothing exposed", args: with("--insecure-listen"), wantErr: "no prefix given"},
		{name: "unclean expose", args: with("--insecure-listen", "--expose", "/a/../b"), wantErr: "not a clean path"},
		{name: "rewrite of unexposed", args: with("--insecure-listen", "--expose", "/a", "--rewrite", "/b=/c"), wantErr: "/b is not exposed"},
		{name: "bad rate", args: with("--insecure-listen", "--expose", "/a", "--rate", "lots"), wantErr: `--rate "lots"`},
		{name: "burst without rate", args: with("--insecure-listen", "--expose", "/a", "--burst", "5"), wantErr: "--burst without --rate"},
		{name: "no TLS files", args: with("--expose", "/a"), wantErr: "needs --tls-cert and --tls-key"},
		{name: "TLS and insecure", args: with("--expose", "/a", "--insecure-listen", "--tls-cert", junk, "--tls-key", junk), wantErr: "not both"},
		{name: "junk certificate", args: with("--expose", "/a", "--tls-cert", junk, "--tls-key", junk), wantErr: "loading --tls-cert"},
		{name: "bad listen", args: with("--insecure-listen", "--expose", "/a", "--listen", "nowhere"), wantErr: "--listen nowhere"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, errb := testEnv(nil)
			if code := run(context.Background(), tc.args, env); code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, errb)
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr %q lacks %q", errb, tc.wantErr)
			}
		})
	}
}
