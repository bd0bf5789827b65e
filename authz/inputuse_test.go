package authz

import (
	"context"
	"os"
	"reflect"
	"testing"
	"time"
)

// TestDecisionInputUse: the parts of input.request a policy can observe,
// as the engine works them out when it loads a revision.
func TestDecisionInputUse(t *testing.T) {
	const pkg = "package meshguard.authz\n\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  inputUse
	}{
		{
			name:  "constant policy reads nothing",
			files: map[string]string{"p.rego": pkg + "allow := true\n"},
			want:  inputUse{},
		},
		{
			name:  "source and destination are not request fields",
			files: map[string]string{"p.rego": pkg + "allow if input.source.service == input.destination.service\n"},
			want:  inputUse{},
		},
		{
			name:  "one field",
			files: map[string]string{"p.rego": pkg + "allow if input.request.method == \"GET\"\n"},
			want:  inputUse{fields: fieldMethod},
		},
		{
			name:  "one header by name",
			files: map[string]string{"p.rego": pkg + "allow if input.request.headers[\"x-a\"] == \"1\"\n"},
			want:  inputUse{fields: fieldHeaders, headers: []string{"x-a"}},
		},
		{
			name:  "headers by variable name",
			files: map[string]string{"p.rego": pkg + "allow if {\n\tsome k\n\tinput.request.headers[k] == \"1\"\n}\n"},
			want:  inputUse{fields: fieldHeaders},
		},
		{
			name: "header names from data, resolved by partial evaluation",
			files: map[string]string{
				"p.rego":    pkg + "allow if {\n\tevery name, v in data.required {\n\t\tinput.request.headers[name] == v\n\t}\n}\n",
				"data.json": `{"required": {"x-tenant": "acme", "x-b": "1"}}`,
			},
			want: inputUse{fields: fieldHeaders, headers: []string{"x-b", "x-tenant"}},
		},
		{
			name:  "request through a local, specialized by partial evaluation",
			files: map[string]string{"p.rego": pkg + "allow if {\n\tr := input.request\n\tr.query.a\n}\n"},
			want:  inputUse{fields: fieldQuery},
		},
		{
			name:  "request used whole",
			files: map[string]string{"p.rego": pkg + "allow if count(input.request) > 5\n"},
			want:  everything,
		},
		{
			name:  "input used whole",
			files: map[string]string{"p.rego": pkg + "allow if object.get(input, [\"request\", \"host\"], \"\") == \"h\"\n"},
			want:  everything,
		},
		{
			name:  "request indexed by a variable",
			files: map[string]string{"p.rego": pkg + "allow if {\n\tsome f\n\tinput.request[f] == \"GET\"\n}\n"},
			want:  everything,
		},
		{
			name:  "through rules and functions",
			files: map[string]string{"p.rego": pkg + "allow if ok(input.request.path)\n\nok(p) if {\n\tp == \"/\"\n\tq\n}\n\nq if input.request.query.a\n"},
			want:  inputUse{fields: fieldPath | fieldQuery},
		},
		{
			name:  "what only reasons read counts",
			files: map[string]string{"p.rego": pkg + "default allow := false\n\nreasons contains input.request.host if input.request.protocol\n"},
			want:  inputUse{fields: fieldHost | fieldProtocol},
		},
		{
			name: "shipped policy: method, path and the one header a grant requires",
			files: map[string]string{
				"authz.rego": readFile(t, "../policies/authz.rego"),
				"deny.rego":  readFile(t, "../policies/deny.rego"),
				"data.json":  readFile(t, "../policies/data.json"),
			},
			want: inputUse{fields: fieldMethod | fieldPath | fieldHeaders, headers: []string{"x-tenant"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(Config{Dir: policyDir(t, tc.files), SkipTests: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Ready(); err != nil {
				t.Fatal(err)
			}
			if got := e.current.Load().input; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("input use = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPrunedInputSameDecisions: leaving out what the policy cannot observe
// changes no decision, for the header a grant requires present, absent or
// wrong, and with headers and a query the policy never reads.
func TestPrunedInputSameDecisions(t *testing.T) {
	// A generous deadline: Explain traces the rules as written, which under
	// the race detector on a loaded machine can pass the default 100ms.
	e, err := New(Config{Dir: "../policies", SkipTests: true, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		headers map[string]string
		method  string
		want    bool
	}{
		{name: "required header", method: "POST", headers: map[string]string{"x-tenant": "acme", "accept": "*/*"}, want: true},
		{name: "required header wrong", method: "POST", headers: map[string]string{"x-tenant": "evil"}, want: false},
		{name: "required header absent", method: "PUT", headers: map[string]string{"accept": "*/*"}, want: false},
		{name: "no header required", method: "GET", headers: map[string]string{"accept": "*/*"}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &Input{
				Source:      Source{SPIFFEID: "spiffe://example.org/svc/billing", TrustDomain: "example.org", Service: "billing"},
				Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
				Request: Request{Method: tc.method, Path: "/users/42/billing", Headers: tc.headers,
					Query: map[string][]string{"x": {"1"}}, Host: "users", Protocol: "HTTP/2.0"},
			}
			d := e.Decide(ctx, in)
			if d.Allow != tc.want {
				t.Fatalf("allow = %v (reasons %v), want %v", d.Allow, d.Reasons, tc.want)
			}
			// The rules as written, on the whole input, agree.
			if explained, _ := e.Explain(ctx, in); explained.Allow != d.Allow || !reflect.DeepEqual(explained.Reasons, d.Reasons) {
				t.Errorf("explain: allow %v reasons %v; decide: allow %v reasons %v", explained.Allow, explained.Reasons, d.Allow, d.Reasons)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInputDocRefill: a document refilled in place equals, hash included,
// the one built afresh, input after input and as the use changes.
func TestInputDocRefill(t *testing.T) {
	keys := newInputKeys()
	uses := []inputUse{
		{fields: fieldMethod | fieldPath | fieldHeaders, headers: []string{"x-tenant"}},
		{fields: fieldMethod | fieldPath | fieldHeaders, headers: []string{"x-tenant"}},
		everything,
		{},
		{fields: fieldQuery | fieldHost | fieldProtocol},
	}
	inputs := []*Input{
		benchInput(),
		{Source: Source{SPIFFEID: "spiffe://example.org/svc/billing", TrustDomain: "example.org", Service: "billing"},
			Destination: Destination{SPIFFEID: "spiffe://example.org/svc/users", Service: "users"},
			Request: Request{Method: "POST", Path: "/users/1/billing", Headers: map[string]string{"x-tenant": "acme"},
				Query: map[string][]string{"a": {"1"}}, Host: "users", Protocol: "HTTP/1.1"}},
		{Request: Request{Method: "GET", Path: "/"}},
	}
	var d inputDoc
	for _, use := range uses {
		for round := range 2 {
			for i, in := range inputs {
				got := keys.fill(&d, in, use)
				want := keys.astValueOf(in, use)
				if got.Value.Compare(want) != 0 || got.Value.Hash() != want.Hash() {
					t.Fatalf("use %+v round %d input %d:\n got %v (hash %d)\nwant %v (hash %d)", use, round, i, got, got.Value.Hash(), want, want.Hash())
				}
			}
		}
	}
}
