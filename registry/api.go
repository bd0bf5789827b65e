package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The registry API, mounted under PathPrefix on `ca serve`'s TLS listener.
// Every call needs a client certificate that verifies against the CA root
// and passes svidcheck.Leaf; that SVID is the caller's only credential.
//
//	POST   /v1/registry/entries                        register or replace (body: Registration) -> 200 Entry
//	POST   /v1/registry/entries/{service}/{address}/renew  renew the lease  -> 200 Entry
//	DELETE /v1/registry/entries/{service}/{address}    deregister            -> 204
//	GET    /v1/registry/entries                        list                  -> 200 Snapshot
//	GET    /v1/registry/watch[?since=REV[&store=ID]]   application/x-ndjson stream of Event:
//	                                                    a snapshot (or, with since, the changes after REV
//	                                                    if ID, from the last snapshot, is still the store's),
//	                                                    then every change, plus heartbeats
//
// Errors are JSON APIError bodies: 400 bad_request, 401 unauthenticated,
// 403 forbidden, 404 not_found, 405 method_not_allowed, 409 conflict,
// 413 too_large, 429 too_many_endpoints, 503 unavailable.
const PathPrefix = "/v1/registry/"

// Defaults of HandlerConfig.
const (
	DefaultMaxBody   = 64 << 10
	DefaultHeartbeat = 15 * time.Second
	// watchWriteTimeout bounds one write to a watcher; a stuck reader is cut.
	watchWriteTimeout = 30 * time.Second
)

// Registration is the body of a register call.
type Registration struct {
	Service  string            `json:"service"`
	SPIFFEID string            `json:"spiffe_id"`
	Address  string            `json:"address"`
	Routes   []string          `json:"routes,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Weight   int               `json:"weight,omitempty"`
	// TTLSeconds is the lease; 0 means DefaultTTL.
	TTLSeconds int `json:"ttl_seconds,omitempty"`
}

// Entry returns the normalized entry the registration asks for.
func (r Registration) Entry() Entry {
	e := Entry{Service: r.Service, SPIFFEID: r.SPIFFEID, Address: r.Address, Routes: append([]string(nil), r.Routes...), Labels: r.Labels, Weight: r.Weight}
	e.Normalize()
	return e
}

// APIError is the JSON body of every error answer.
type APIError struct {
	// Status is the HTTP status (not in the body).
	Status  int    `json:"-"`
	Code    string `json:"error"`
	Message string `json:"message"`
	// Route and Owner are set on 409.
	Route string `json:"route,omitempty"`
	Owner string `json:"owner,omitempty"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("registry: %d %s: %s", e.Status, e.Code, e.Message)
}

// Unwrap maps 404 to ErrNotFound and 409 to ErrRouteConflict.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrRouteConflict
	}
	return nil
}

// HandlerConfig configures NewHandler.
type HandlerConfig struct {
	// Store holds the entries (required).
	Store Store
	// TrustDomain is the CA's trust domain; callers from others are refused.
	TrustDomain spiffeid.TrustDomain
	// Logger (slog.Default() if nil).
	Logger *slog.Logger
	// MaxBody bounds a request body (DefaultMaxBody if 0).
	MaxBody int64
	// Heartbeat is how often an idle watch stream gets a heartbeat line
	// (DefaultHeartbeat if 0).
	Heartbeat time.Duration
	// MaxEndpoints bounds the entries one service may have
	// (DefaultMaxEndpoints if 0), so that one identity cannot make every
	// agent hold an unbounded table. It is checked before the write, not in
	// the same transaction: concurrent registrations may overshoot slightly.
	MaxEndpoints int
}

// DefaultMaxEndpoints is HandlerConfig.MaxEndpoints' default.
const DefaultMaxEndpoints = 1024

// Handler serves the registry API.
type Handler struct {
	cfg HandlerConfig
	mux *http.ServeMux
}

// NewHandler returns the registry API handler. Mount it at PathPrefix on a
// TLS listener that verifies client certificates (if given) against the
// CA's root; it extends the connection's write deadline for watch streams.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry handler: no store")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("registry handler: no trust domain")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxEndpoints <= 0 {
		cfg.MaxEndpoints = DefaultMaxEndpoints
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /v1/registry/entries", h.authed(h.register))
	h.mux.HandleFunc("GET /v1/registry/entries", h.authed(h.list))
	h.mux.HandleFunc("POST /v1/registry/entries/{service}/{address}/renew", h.authed(h.renew))
	h.mux.HandleFunc("DELETE /v1/registry/entries/{service}/{address}", h.authed(h.deregister))
	h.mux.HandleFunc("GET /v1/registry/watch", h.authed(h.watch))
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p != path.Clean(p) || strings.Contains(r.URL.RawPath, "%2F") || strings.Contains(r.URL.RawPath, "%2f") ||
		strings.ContainsAny(p, "\\\x00") {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "request path is not normalized"})
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		// Unknown path or method: answer in JSON, not ServeMux's text.
		status, code := http.StatusNotFound, "not_found"
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pat := h.mux.Handler(probe); pat != "" {
				status, code = http.StatusMethodNotAllowed, "method_not_allowed"
			}
		}
		writeError(w, &APIError{Status: status, Code: code, Message: fmt.Sprintf("no registry endpoint %s %s", r.Method, p)})
		return
	}
	h.mux.ServeHTTP(w, r)
}

type authedFunc func(w http.ResponseWriter, r *http.Request, caller spiffeid.ID)

// authed resolves the caller from the verified client certificate.
func (h *Handler) authed(next authedFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: "a client certificate (X.509-SVID) signed by the CA is required"})
			return
		}
		id, err := svidcheck.Leaf(r.TLS.VerifiedChains[0][0])
		if err != nil {
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: err.Error()})
			return
		}
		if id.TrustDomain() != h.cfg.TrustDomain {
			writeError(w, &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("caller %s is not in trust domain %s", id, h.cfg.TrustDomain.Name())})
			return
		}
		next(w, r, id)
	}
}

// mayWrite checks that caller is spiffe://TD/svc/service.
func (h *Handler) mayWrite(caller spiffeid.ID, service string) *APIError {
	if err := ValidateService(service); err != nil {
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: err.Error()}
	}
	want, err := ServiceID(h.cfg.TrustDomain, service)
	if err != nil || caller != want {
		return &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("service %q may only be written by %s, not by %s", service, want, caller)}
	}
	return nil
}

func (h *Handler) register(w http.ResponseWriter, r *http.Request, caller spiffeid.ID) {
	var reg Registration
	if apiErr := decodeBody(w, r, h.cfg.MaxBody, &reg); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if apiErr := h.mayWrite(caller, reg.Service); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if reg.SPIFFEID != caller.String() {
		writeError(w, &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("spiffe_id %q is not the caller's identity %s", reg.SPIFFEID, caller)})
		return
	}
	e := reg.Entry()
	if err := e.Validate(); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: err.Error()})
		return
	}
	ttl := DefaultTTL
	if reg.TTLSeconds != 0 {
		ttl = time.Duration(reg.TTLSeconds) * time.Second
		if ttl < MinTTL || ttl > MaxTTL {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("invalid ttl_seconds %d: want %d..%d", reg.TTLSeconds, int(MinTTL.Seconds()), int(MaxTTL.Seconds()))})
			return
		}
	}
	keys, err := h.cfg.Store.Keys(r.Context(), e.Service)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if len(keys) >= h.cfg.MaxEndpoints && !slices.Contains(keys, e.Key()) {
		writeError(w, &APIError{Status: http.StatusTooManyRequests, Code: "too_many_endpoints", Message: fmt.Sprintf("service %q already has %d endpoints, the most the registry accepts", e.Service, len(keys))})
		return
	}
	got, err := h.cfg.Store.Put(r.Context(), e, ttl)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Logger.Info("registry entry registered", logkey.Service, got.Service, logkey.Addr, got.Address, logkey.SPIFFEID, got.SPIFFEID, logkey.Revision, got.Revision)
	writeJSON(w, http.StatusOK, got)
}

// pathKey reads and validates {service}/{address} and the caller's right to it.
func (h *Handler) pathKey(r *http.Request, caller spiffeid.ID) (Key, *APIError) {
	k := Key{Service: r.PathValue("service"), Address: r.PathValue("address")}
	if apiErr := h.mayWrite(caller, k.Service); apiErr != nil {
		return k, apiErr
	}
	if err := ValidateAddress(k.Address); err != nil {
		return k, &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: err.Error()}
	}
	return k, nil
}

func (h *Handler) renew(w http.ResponseWriter, r *http.Request, caller spiffeid.ID) {
	k, apiErr := h.pathKey(r, caller)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	got, err := h.cfg.Store.Renew(r.Context(), k)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (h *Handler) deregister(w http.ResponseWriter, r *http.Request, caller spiffeid.ID) {
	k, apiErr := h.pathKey(r, caller)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	if err := h.cfg.Store.Delete(r.Context(), k); err != nil {
		h.storeError(w, r, err)
		return
	}
	h.cfg.Logger.Info("registry entry deregistered", logkey.Service, k.Service, logkey.Addr, k.Address, logkey.SPIFFEID, caller.String())
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) {
	snap, err := h.cfg.Store.List(r.Context())
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snap)
}

func (h *Handler) watch(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) {
	var since int64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("invalid since %q: want a revision >= 0", s)})
			return
		}
		since = v
	}
	if want := r.URL.Query().Get("store"); want != "" && since > 0 {
		id, err := h.cfg.Store.ID(r.Context())
		if err != nil {
			h.storeError(w, r, err)
			return
		}
		if want != id {
			since = 0 // revisions of another store: start over with a snapshot
		}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var mu sync.Mutex
	send := func(ev Event) error {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(Event{Type: EventHeartbeat}); err != nil {
		return
	}
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(h.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if send(Event{Type: EventHeartbeat}) != nil {
					cancel()
					return
				}
			}
		}
	}()
	err := h.cfg.Store.Watch(ctx, since, send)
	cancel()
	<-hbDone
	if err != nil && r.Context().Err() == nil {
		h.cfg.Logger.Warn("registry watch ended", logkey.Error, err.Error())
	}
}

func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var ce *ConflictError
	switch {
	case errors.As(err, &ce):
		writeError(w, &APIError{Status: http.StatusConflict, Code: "conflict", Message: ce.Error(), Route: ce.Route, Owner: ce.Owner})
	case errors.Is(err, ErrNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: "not_found", Message: "no such entry (never registered, deregistered, or its lease expired)"})
	case r.Context().Err() != nil:
		writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "request cancelled"})
	default:
		h.cfg.Logger.Error("registry store failed", logkey.Path, r.URL.Path, logkey.Error, err.Error())
		writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "registry store unavailable"})
	}
}

// decodeBody reads exactly one JSON object with no unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *APIError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("request body larger than %d bytes", limit)}
		}
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "invalid JSON body: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("request body larger than %d bytes", limit)}
		}
		return &APIError{Status: http.StatusBadRequest, Code: "bad_request", Message: "invalid JSON body: data after the object"}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *APIError) {
	writeJSON(w, e.Status, e)
}
