package proxy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/authz"
)

const testPolicy = `package meshguard.authz

default allow := false

allow if {
	input.source.service == "web"
	input.destination.service == "users"
	startswith(input.request.path, "/public/")
	not input.request.headers["x-forwarded-client-cert"]
}

reasons contains "web may only read /public/" if not allow
`

// TestInboundWithRegoEngine: the real authz engine with a real Rego policy
// decides on the input the inbound built; a denial's 403 carries the
// decision ID of its audit line, and a dot-dot escape is judged on the
// normalized path.
func TestInboundWithRegoEngine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	var audit syncBuffer
	auditor := authz.NewAuditor(&audit, authz.AuditConfig{})
	run(t, auditor)
	engine, err := authz.New(authz.Config{Dir: dir, Audit: auditor})
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Ready(); err != nil {
		t.Fatal(err)
	}
	m := newMesh(t, meshOpts{app: echoApp(), inTweak: func(c *InboundConfig) { c.Authorizer = engine }})
	c := newClient()
	defer c.CloseIdleConnections()

	req, _ := http.NewRequest(http.MethodGet, m.outURL+"/public/x", nil)
	req.Host = "users"
	req.Header.Set("X-Forwarded-Client-Cert", "By=forged")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("allowed request: status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("X-App-XFCC"); got != "By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/web" {
		t.Fatalf("app saw XFCC %q", got)
	}

	resp, body := get(t, c, m.outURL+"/public/../admin", "users")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied request: status %d %s", resp.StatusCode, body)
	}
	var deny struct {
		Error      string `json:"error"`
		DecisionID string `json:"decision_id"`
	}
	if err := json.Unmarshal([]byte(body), &deny); err != nil || deny.Error != "forbidden" || deny.DecisionID == "" {
		t.Fatalf("403 body %q (%v)", body, err)
	}
	eventually(t, "audit line for "+deny.DecisionID, func() bool { return strings.Contains(audit.String(), deny.DecisionID) })
	var rec map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(audit.String()), "\n") {
		if strings.Contains(line, deny.DecisionID) {
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if rec["path"] != "/admin" || rec["source_id"] != "spiffe://example.org/svc/web" || rec["msg"] != "request denied" {
		t.Fatalf("audit record %v", rec)
	}
}
