package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshguard/meshguard/internal/h2client"
	"github.com/meshguard/meshguard/internal/rawsock"
	"github.com/meshguard/meshguard/internal/svidcheck"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// peer is one endpoint of a service, as the outbound side sees it: its
// pooled HTTP/2 connection and its balancing and health statistics.
//
// One HTTP/2 connection per endpoint, an internal/h2client Conn: the pool
// needs what net/http's Transport does not offer (graceful Shutdown for
// draining on rotation, SetDoNotReuse, State to tell a dead connection from
// a busy one), and x/net's ClientConn, which offers them, costs a goroutine
// and a syscall per request (see the h2client package). Concurrency is
// capped by our own semaphore, as the server's stream limit is only a
// ceiling (x/net's strict mode can deadlock, golang/go#70809).
type peer struct {
	o    *Outbound
	id   spiffeid.ID
	addr string
	tls  *tls.Config // dynamic: reads the live SVID and bundle per handshake
	sem  chan struct{}

	mu   sync.Mutex
	cur  *pconn
	dial *dialCall

	inflight atomic.Int64

	statMu       sync.Mutex
	ewma         float64 // peak-EWMA latency to response headers, nanoseconds
	ewmaAt       int64
	fails        int
	ejections    int
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 = never ejected
}

type peerKey struct {
	id   spiffeid.ID
	addr string
}

// pconn is one pooled connection and what it was opened with.
type pconn struct {
	cc      *h2client.Conn
	renewAt time.Time           // before the SVIDs of either side expire
	chain   []*x509.Certificate // the peer's chain, re-verified on bundle change
	retired atomic.Bool
}

type dialCall struct {
	done chan struct{}
	err  error
}

// errNoHealthy is returned when every endpoint of a service is ejected.
var errNoHealthy = errors.New("no healthy endpoint")

// conn returns a usable connection with one stream reserved on it, dialling
// (once, shared by all waiters) when there is none. now is the caller's
// clock reading; ready is when the connection was had: now, unless it had
// to wait.
func (p *peer) conn(ctx context.Context, now time.Time) (c *pconn, ready time.Time, err error) {
	waited := false
	for attempt := 0; attempt < 4; attempt++ {
		if waited {
			now = p.o.cfg.Now()
		}
		waited = true // every path that loops has waited
		p.mu.Lock()
		if c := p.cur; c != nil {
			if now.Before(c.renewAt) && c.cc.Reserve() {
				p.mu.Unlock()
				return c, now, nil
			}
			st := c.cc.State()
			if !st.Closed && !st.Closing && now.Before(c.renewAt) {
				// Alive but at the peer's stream limit (lower than our
				// semaphore): wait for a stream to finish.
				p.mu.Unlock()
				if err := waitBriefly(ctx, attempt); err != nil {
					return nil, now, err
				}
				attempt--
				continue
			}
			p.cur = nil
			p.o.retire(c)
		}
		call := p.dial
		if call == nil {
			call = &dialCall{done: make(chan struct{})}
			p.dial = call
			p.o.wg.Add(1)
			go p.dialInto(call)
		}
		p.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, now, ctx.Err()
		}
		if call.err != nil {
			return nil, now, call.err
		}
	}
	return nil, now, fmt.Errorf("connect to %s at %s: connection closed right after dialling", p.id, p.addr)
}

func waitBriefly(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(attempt+1) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *peer) dialInto(call *dialCall) {
	defer p.o.wg.Done()
	c, err := p.dialConn()
	p.mu.Lock()
	p.dial = nil
	if err == nil {
		p.cur = c
	}
	p.mu.Unlock()
	call.err = err
	close(call.done)
}

// dialConn opens one mTLS HTTP/2 connection. Its context is the Outbound's,
// not the first caller's, so a caller that gives up does not fail the dial
// for the others.
func (p *peer) dialConn() (*pconn, error) {
	o := p.o
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.DialTimeout)
	defer cancel()
	own, err := o.cfg.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("dial %s: get own SVID: %w", p.id, err)
	}
	raw, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", p.id, p.addr, err)
	}
	tc := tls.Client(rawsock.Wrap(raw), p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("dial %s at %s: %w", p.id, p.addr, err)
	}
	o.cfg.Metrics.hsOut.Inc()
	cc, err := h2client.New(tc, o.h2)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: start HTTP/2: %w", p.id, p.addr, err)
	}
	o.cfg.Metrics.upstreams.Inc()
	chain := tc.ConnectionState().PeerCertificates
	exp := own.Certificates[0].NotAfter
	if chain[0].NotAfter.Before(exp) {
		exp = chain[0].NotAfter
	}
	now := o.cfg.Now()
	margin := min(o.cfg.RenewBefore, exp.Sub(now)/2)
	return &pconn{cc: cc, renewAt: exp.Add(-margin), chain: chain}, nil
}

// stillValid re-verifies a pooled connection's peer against the live bundle
// and the expected ID.
func (p *peer) stillValid(c *pconn) error {
	id, _, err := x509svid.Verify(c.chain, p.o.cfg.Source)
	if err != nil {
		return err
	}
	if _, err := svidcheck.Leaf(c.chain[0]); err != nil {
		return err
	}
	if id != p.id {
		return fmt.Errorf("peer presents %s, want %s", id, p.id)
	}
	return nil
}

// drop removes c from the pool (if it is still the current one) and drains it.
func (p *peer) drop(c *pconn) {
	p.mu.Lock()
	if p.cur == c {
		p.cur = nil
	}
	p.mu.Unlock()
	p.o.retire(c)
}

// roundTrip sends req over the pooled connection. touched reports whether
// the request was handed to the connection (its body may have been read).
// now is a clock reading taken just before (for the connection's renewal
// check and the start of the latency sample).
func (p *peer) roundTrip(req *http.Request, now time.Time) (resp *http.Response, touched bool, err error) {
	ctx := req.Context()
	select {
	case p.sem <- struct{}{}:
	default:
		select {
		case p.sem <- struct{}{}:
			now = p.o.cfg.Now() // waited for a slot
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	c, start, err := p.conn(ctx, now)
	if err != nil {
		<-p.sem
		if ctx.Err() == nil {
			p.failure()
		}
		return nil, false, err
	}
	p.inflight.Add(1)
	resp, err = c.cc.RoundTrip(req)
	if err != nil {
		p.inflight.Add(-1)
		<-p.sem
		if st := c.cc.State(); st.Closed || st.Closing {
			p.drop(c)
		}
		if ctx.Err() == nil {
			p.failure()
		}
		return nil, true, err
	}
	end := p.o.cfg.Now()
	p.observe(end.Sub(start), end)
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		p.failure()
	default:
		p.success()
	}
	resp.Body = &peerBody{ReadCloser: resp.Body, p: p}
	return resp, true, nil
}

// notSent reports whether a RoundTrip error means the server never
// processed the request (refused before the stream started, a GOAWAY below
// its stream ID, REFUSED_STREAM).
func notSent(err error) bool { return errors.Is(err, h2client.ErrNotSent) }

// peerBody releases the stream slot when the response body is done.
type peerBody struct {
	io.ReadCloser
	p    *peer
	done atomic.Bool
}

func (b *peerBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if err != nil {
		b.release()
	}
	return n, err
}

func (b *peerBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (b *peerBody) release() {
	if b.done.CompareAndSwap(false, true) {
		b.p.inflight.Add(-1)
		<-b.p.sem
	}
}

// ewmaTau is the decay time of the latency average.
const ewmaTau = float64(10 * time.Second)

// observe folds one latency into the peak-EWMA (Finagle's): a slower sample
// replaces the average at once, faster ones pull it down gradually.
func (p *peer) observe(d time.Duration, at time.Time) {
	now := at.UnixNano()
	rtt := float64(d)
	p.statMu.Lock()
	if rtt > p.ewma || p.ewmaAt == 0 {
		p.ewma = rtt
	} else {
		w := math.Exp(-float64(now-p.ewmaAt) / ewmaTau)
		p.ewma = p.ewma*w + rtt*(1-w)
	}
	p.ewmaAt = now
	p.statMu.Unlock()
}

// cost is the P2C load score: latency × (in-flight + 1).
func (p *peer) cost() float64 {
	p.statMu.Lock()
	e := p.ewma
	p.statMu.Unlock()
	return (e + float64(time.Microsecond)) * float64(p.inflight.Load()+1)
}

func (p *peer) success() {
	p.statMu.Lock()
	p.fails = 0
	if p.ejections > 0 {
		// Forgive one ejection per healthy base period after the last one.
		if p.o.cfg.Now().UnixNano() > p.ejectedUntil.Load()+int64(p.o.cfg.Ejection.BaseTime) {
			p.ejections--
		}
	}
	p.statMu.Unlock()
}

// failure counts a consecutive failure and ejects the endpoint for
// BaseTime × (number of ejections), capped at MaxTime, at the threshold.
func (p *peer) failure() {
	e := p.o.cfg.Ejection
	p.statMu.Lock()
	defer p.statMu.Unlock()
	p.fails++
	if p.fails < e.ConsecutiveFailures {
		return
	}
	p.fails = 0
	p.ejections++
	d := min(time.Duration(p.ejections)*e.BaseTime, e.MaxTime)
	until := p.o.cfg.Now().Add(d)
	p.ejectedUntil.Store(until.UnixNano())
	p.o.log.Warn("endpoint ejected", "peer", p.id.String(), "addr", p.addr, "for", d.String())
}

func (p *peer) ejected(now int64) bool { return p.ejectedUntil.Load() > now }
