package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshguard/meshguard/authz"
	"github.com/meshguard/meshguard/internal/testca"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func svcID(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/svc/"+name) }

// fakeAuthz allows requests whose normalized path starts with one of allow,
// and records every input it saw.
type fakeAuthz struct {
	allow []string
	mu    sync.Mutex
	seen  []authz.Input
	block chan struct{} // when non-nil, Authorize waits for it (ignoring ctx)
	calls atomic.Int64
}

func (a *fakeAuthz) Authorize(_ context.Context, in *authz.Input, _ string) authz.Decision {
	a.calls.Add(1)
	if a.block != nil {
		<-a.block
	}
	a.mu.Lock()
	a.seen = append(a.seen, *in)
	a.mu.Unlock()
	for _, p := range a.allow {
		if strings.HasPrefix(in.Request.Path, p) {
			return authz.Decision{Allow: true, ID: "d-allow"}
		}
	}
	return authz.Decision{Allow: false, ID: "d-deny-1", Reasons: []string{"not allowed"}}
}

func (a *fakeAuthz) last(t *testing.T) authz.Input {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("authorizer was not called")
	}
	return a.seen[len(a.seen)-1]
}

// listen opens a loopback listener.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startApp serves h on loopback (HTTP/1.1, plus h2c when h2c is set).
func startApp(t testing.TB, h http.Handler, h2c bool) string {
	t.Helper()
	ln := listen(t)
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	if h2c {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// run starts a Run(ctx) part and stops it at cleanup, failing on a bad exit.
func run(t testing.TB, part interface{ Run(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- part.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// mesh is two agents: "web" (outbound) calling "users" (inbound → app).
type mesh struct {
	ca       *testca.CA
	webSrc   *testca.Source
	usersSrc *testca.Source
	webM     *Metrics
	usersM   *Metrics
	webReg   *prometheus.Registry
	usersReg *prometheus.Registry
	authz    *fakeAuthz
	in       *Inbound
	out      *Outbound
	outURL   string
	appAddr  string
	peers    *StaticPeers
	inCfg    InboundConfig
	outCfg   OutboundConfig
}

type meshOpts struct {
	app      http.Handler
	appAddr  string // use this running app instead of serving app
	h2cApp   bool
	allow    []string
	routes   map[string]string
	inTweak  func(*InboundConfig)
	outTweak func(*OutboundConfig)
	usersID  spiffeid.ID // the ID the outbound expects (default svc/users)
}

func newMesh(t testing.TB, o meshOpts) *mesh {
	t.Helper()
	m := &mesh{ca: testca.New(t, td)}
	m.webSrc = testca.NewSource(m.ca.SVID(svcID("web"), testca.Options{}), m.ca.Bundle())
	m.usersSrc = testca.NewSource(m.ca.SVID(svcID("users"), testca.Options{}), m.ca.Bundle())
	m.webReg, m.usersReg = prometheus.NewRegistry(), prometheus.NewRegistry()
	var err error
	if m.webM, err = NewMetrics(m.webReg); err != nil {
		t.Fatal(err)
	}
	if m.usersM, err = NewMetrics(m.usersReg); err != nil {
		t.Fatal(err)
	}
	if o.allow == nil {
		o.allow = []string{"/"}
	}
	m.authz = &fakeAuthz{allow: o.allow}
	m.appAddr = o.appAddr
	if m.appAddr == "" {
		m.appAddr = startApp(t, o.app, o.h2cApp)
	}
	m.inCfg = InboundConfig{
		Listener: listen(t), App: m.appAddr, Service: "users",
		Source: m.usersSrc, Authorizer: m.authz, Metrics: m.usersM,
	}
	if o.h2cApp {
		m.inCfg.AppProtocol = AppH2C
	}
	if o.inTweak != nil {
		o.inTweak(&m.inCfg)
	}
	if m.in, err = NewInbound(m.inCfg); err != nil {
		t.Fatal(err)
	}
	run(t, m.in)
	id := o.usersID
	if id.IsZero() {
		id = svcID("users")
	}
	m.peers, err = NewStaticPeers([]Endpoint{{Service: "users", ID: id, Addr: m.in.Addr().String()}}, o.routes)
	if err != nil {
		t.Fatal(err)
	}
	m.outCfg = OutboundConfig{Listener: listen(t), Source: m.webSrc, Peers: m.peers, Metrics: m.webM}
	if o.outTweak != nil {
		o.outTweak(&m.outCfg)
	}
	if m.out, err = NewOutbound(m.outCfg); err != nil {
		t.Fatal(err)
	}
	run(t, m.out)
	m.outURL = "http://" + m.out.Addr().String()
	return m
}

func handshakes(m *Metrics, dir string) float64 {
	return counterValue(m.handshakes.WithLabelValues(dir))
}

func counterValue(c prometheus.Metric) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
