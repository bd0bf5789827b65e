// Package demo holds the tiny HTTP services that `meshguard dev`, the compose
// file and the Kubernetes example run behind agents. Each answers JSON that
// says which service answered, what it was asked, and which mesh identity
// called it (from the X-Forwarded-Client-Cert header its agent sets).
package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Reply is what every demo service answers.
type Reply struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Caller  string `json:"caller,omitempty"` // the peer SPIFFE ID the agent verified
	Body    string `json:"body,omitempty"`
	Message string `json:"message"`
}

// Handler returns the demo service called name.
func Handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		reply := Reply{
			Service: name,
			Method:  r.Method,
			Path:    r.URL.Path,
			Caller:  callerFromXFCC(r.Header.Get("X-Forwarded-Client-Cert")),
			Body:    string(body),
			Message: message(name, r),
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/healthz" {
			reply.Message = "ok"
		}
		_ = json.NewEncoder(w).Encode(reply)
	})
}

func message(name string, r *http.Request) string {
	switch {
	case name == "users" && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/charges"):
		return "charge recorded"
	case name == "users" && r.Method == http.MethodGet:
		return "user " + strings.TrimPrefix(r.URL.Path, "/users/")
	default:
		return "hello from " + name
	}
}

// callerFromXFCC extracts URI=... from the last element of an Envoy-style
// X-Forwarded-Client-Cert header (By=<own id>;URI=<peer id>).
func callerFromXFCC(xfcc string) string {
	if xfcc == "" {
		return ""
	}
	elems := strings.Split(xfcc, ",")
	for _, kv := range strings.Split(elems[len(elems)-1], ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && strings.EqualFold(k, "URI") {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
