package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// testEnv returns a runEnv with captured streams and the given environment.
func testEnv(vars map[string]string) (*runEnv, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &runEnv{
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return vars[k] },
		logger: slog.New(slog.NewJSONHandler(&errb, nil)),
	}, &out, &errb
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "no command", args: nil, wantCode: 2, wantErr: "usage: meshguard"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{name: "unknown flag", args: []string{"version", "--nope"}, wantCode: 2, wantErr: "flag provided but not defined: -nope"},
		{name: "stray argument", args: []string{"version", "extra"}, wantCode: 2, wantErr: `unexpected argument "extra"`},
		{name: "version", args: []string{"version"}, wantCode: 0},
		{name: "dev with bad base port", args: []string{"dev", "--base-port", "80"}, wantCode: 2, wantErr: "--base-port 80 out of range"},
		{name: "demo-app without name", args: []string{"demo-app"}, wantCode: 2, wantErr: "--name is required (or set MESHGUARD_NAME)"},
		{name: "demo-app bad listen", args: []string{"demo-app", "--name", "x", "--listen", "nope"}, wantCode: 2, wantErr: "--listen nope"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantErr: "commands:"},
		{name: "subcommand help", args: []string{"version", "--help"}, wantCode: 0, wantErr: "Usage of meshguard version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, errb := testEnv(nil)
			if got := run(context.Background(), tc.args, env); got != tc.wantCode {
				t.Fatalf("exit code = %d, want %d; stderr:\n%s", got, tc.wantCode, errb)
			}
			if tc.wantErr != "" && !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr = %q, want it to contain %q", errb, tc.wantErr)
			}
		})
	}
}

func TestParseFlagsEnvironment(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		vars      map[string]string
		wantAddr  string
		wantRoute []string
		wantErr   string
	}{
		{name: "default", wantAddr: "127.0.0.1:15000"},
		{name: "from env", vars: map[string]string{"MESHGUARD_ADMIN_ADDR": "127.0.0.1:1"}, wantAddr: "127.0.0.1:1"},
		{name: "flag beats env", args: []string{"--admin-addr", "127.0.0.1:2"}, vars: map[string]string{"MESHGUARD_ADMIN_ADDR": "127.0.0.1:1"}, wantAddr: "127.0.0.1:2"},
		{name: "list from env", vars: map[string]string{"MESHGUARD_ROUTE": "/a, /b"}, wantAddr: "127.0.0.1:15000", wantRoute: []string{"/a", "/b"}},
		{name: "list flags beat env", args: []string{"--route", "/c"}, vars: map[string]string{"MESHGUARD_ROUTE": "/a"}, wantAddr: "127.0.0.1:15000", wantRoute: []string{"/c"}},
		{name: "bad env value", vars: map[string]string{"MESHGUARD_COUNT": "many"}, wantErr: "invalid value \"many\" for environment variable MESHGUARD_COUNT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _, _ := testEnv(tc.vars)
			fs := newFlagSet("test", env)
			addr := fs.String("admin-addr", "127.0.0.1:15000", "")
			fs.Int("count", 1, "")
			var routes stringList
			fs.Var(&routes, "route", "")
			err := parseFlags(fs, tc.args, env, 0)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !isUsage(err) {
					t.Fatalf("err = %v, want usage error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tc.wantAddr {
				t.Errorf("admin-addr = %q, want %q", *addr, tc.wantAddr)
			}
			if strings.Join(routes, "|") != strings.Join(tc.wantRoute, "|") {
				t.Errorf("routes = %q, want %q", routes, tc.wantRoute)
			}
		})
	}
}
