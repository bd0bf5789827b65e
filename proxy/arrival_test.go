package proxy

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshguard/meshguard/internal/h2server"
)

// TestStartClock: on the real clock a layer starts an HTTP/2 request at
// the server's arrival reading; a configured clock is always read (a test's
// fake time never mixes with the system's); other requests read the clock.
func TestStartClock(t *testing.T) {
	fake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	type result struct{ real, fake, arrived time.Time }
	got := make(chan result, 1)
	srv, err := newH2Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived, ok := h2server.ArrivedAt(r.Context())
		if !ok {
			t.Error("no arrival time on an HTTP/2 request")
		}
		got <- result{
			real:    newStartClock(nil).start(r),
			fake:    newStartClock(func() time.Time { return fake }).start(r),
			arrived: arrived,
		}
	}), true, 10, DefaultMaxHeaderBytes, time.Minute, time.Second, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, sc := net.Pipe()
	served := make(chan struct{})
	go func() { defer close(served); srv.ServeConn(context.Background(), sc) }()
	defer func() { srv.Close(); <-served }()
	tr := &http2.Transport{AllowHTTP: true}
	conn, err := tr.NewClientConn(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://x/", nil)
	resp, err := conn.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-got
	if !r.real.Equal(r.arrived) {
		t.Errorf("real clock: start %v, want the arrival reading %v", r.real, r.arrived)
	}
	if !r.fake.Equal(fake) {
		t.Errorf("fake clock: start %v, want %v", r.fake, fake)
	}

	before := time.Now()
	plain, _ := http.NewRequest("GET", "http://x/", nil)
	if s := newStartClock(nil).start(plain); s.Before(before) {
		t.Errorf("a request without an arrival time started at %v, before %v", s, before)
	}
}
