package ca

import (
	"errors"
	"testing"

	"github.com/smallstep/certificates/policy"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestMapError(t *testing.T) {
	s := &Server{material: &Authority{TrustDomain: spiffeid.RequireTrustDomainFromString(testTD)}}
	tests := []struct {
		name       string
		status     int
		body       string
		err        error
		wantStatus int
		wantMsg    string
	}{
		{name: "policy refusal as raw 500", status: 500, body: "x509 policy: uri name \"spiffe://evil.org/svc/a\" not allowed\n",
			wantStatus: 403, wantMsg: `the requested identity is outside the CA's trust domain example.org: x509 policy: uri name "spiffe://evil.org/svc/a" not allowed`},
		{name: "name policy error", status: 500, body: `{"status":500,"message":"internal"}`, err: &policy.NamePolicyError{Reason: policy.NotAllowed, NameType: policy.URINameType, Name: "spiffe://evil.org/svc/a"},
			wantStatus: 403, wantMsg: `the requested identity is outside the CA's trust domain example.org: uri name "spiffe://evil.org/svc/a" not allowed`},
		{name: "other 500", status: 500, body: "boom", wantStatus: 500, wantMsg: "internal error while issuing the certificate"},
		{name: "nothing written", status: 0, wantStatus: 500, wantMsg: "internal error"},
		{name: "400 passes through", status: 400, body: `{"status":400,"message":"value not allowed here"}`, wantStatus: 400, wantMsg: "value not allowed here"},
		{name: "replay", status: 401, body: `{"status":401,"message":"The request lacked necessary authorization to be completed."}`,
			err: errors.New("authority.UseToken: token already used"), wantStatus: 401, wantMsg: "the token was already used; join tokens are single use"},
		{name: "403 from a validator", status: 403, body: `{"status":403,"message":"The request was forbidden by the certificate authority: certificate request does not contain the valid URIs"}`,
			wantStatus: 403, wantMsg: "The request was forbidden by the certificate authority: certificate request does not contain the valid URIs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			if tc.status != 0 {
				rec.WriteHeader(tc.status)
				_, _ = rec.Write([]byte(tc.body))
			}
			if tc.err != nil {
				rec.WithFields(map[string]any{"error": tc.err})
			}
			status, msg := s.mapError(rec)
			if status != tc.wantStatus || msg != tc.wantMsg {
				t.Fatalf("got %d %q; want %d %q", status, msg, tc.wantStatus, tc.wantMsg)
			}
		})
	}
}
