// Package etcdtest starts a real etcd server for tests, in process, with
// go.etcd.io/etcd/server/v3/embed (the same release as the client), on
// 127.0.0.1 random ports and a temporary data directory. Nothing has to be
// installed: `go test` builds the server from the module cache.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running single-member etcd.
type Server struct {
	etcd *embed.Etcd
	dir  string
	// Endpoints are the client URLs (http://127.0.0.1:PORT).
	Endpoints []string
}

// Start starts a server; call Close when done (TestMain) or use StartTB.
func Start() (*Server, error) {
	dir, err := os.MkdirTemp("", "meshguard-etcd-")
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	client, err := freeURL()
	if err != nil {
		return nil, err
	}
	peer, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "meshguard-test"
	cfg.Dir = dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start etcd: not ready after 60s")
	}
	return &Server{etcd: e, dir: dir, Endpoints: []string{client.String()}}, nil
}

// StartTB starts a server that is closed when tb ends.
func StartTB(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.etcd.Close()
	os.RemoveAll(s.dir)
}

func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start etcd: pick a port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
