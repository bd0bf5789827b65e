package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name, service, method, path, xfcc string
		want                              Reply
	}{
		{name: "get user", service: "users", method: "GET", path: "/users/42",
			xfcc: "By=spiffe://example.org/svc/users;URI=spiffe://example.org/svc/web",
			want: Reply{Service: "users", Method: "GET", Path: "/users/42", Caller: "spiffe://example.org/svc/web", Message: "user 42"}},
		{name: "charge", service: "users", method: "POST", path: "/users/42/charges",
			want: Reply{Service: "users", Method: "POST", Path: "/users/42/charges", Message: "charge recorded"}},
		{name: "quoted and chained xfcc", service: "billing", method: "GET", path: "/billing",
			xfcc: `By=spiffe://x/svc/a;URI="spiffe://x/svc/old",By=spiffe://x/svc/b;URI="spiffe://x/svc/edge"`,
			want: Reply{Service: "billing", Method: "GET", Path: "/billing", Caller: "spiffe://x/svc/edge", Message: "hello from billing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(""))
			if tc.xfcc != "" {
				req.Header.Set("X-Forwarded-Client-Cert", tc.xfcc)
			}
			rec := httptest.NewRecorder()
			Handler(tc.service).ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			var got Reply
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("reply = %+v, want %+v", got, tc.want)
			}
		})
	}
}
