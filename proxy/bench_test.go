package proxy

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/meshguard/meshguard/authz"
	"github.com/meshguard/meshguard/internal/cputime"
)

// BenchmarkTwoAgents measures one request through app ← inbound ← outbound
// ← client, all in-process over loopback (mTLS HTTP/2 between the agents),
// against the same client calling the app directly. Quote the figures as
// mesh/direct ratios:
//
//	go test -run '^$' -bench BenchmarkTwoAgents -benchmem ./proxy
func BenchmarkTwoAgents(b *testing.B) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from users\n")
	})
	for _, proto := range []string{"h1", "h2c"} {
		for _, path := range []string{"direct", "mesh", "mesh-rego", "mesh-h2capp"} {
			b.Run(path+"-"+proto, func(b *testing.B) {
				// The app speaks HTTP/1.1 and h2c (for the direct-h2c
				// baseline); the inbound calls it over HTTP/1.1.
				opts := meshOpts{appAddr: startApp(b, app, true)}
				if path == "mesh-rego" {
					engine, err := authz.New(authz.Config{
						Dir:       filepath.Join("..", "policies"),
						CacheSize: authz.DefaultCacheSize,
					})
					if err != nil {
						b.Fatal(err)
					}
					if err := engine.Ready(); err != nil {
						b.Fatal(err)
					}
					opts.inTweak = func(c *InboundConfig) { c.Authorizer = engine }
				}
				if path == "mesh-h2capp" {
					opts.inTweak = func(c *InboundConfig) { c.AppProtocol = AppH2C }
				}
				m := newMesh(b, opts)
				url := m.outURL + "/users/42"
				if path == "direct" {
					url = "http://" + m.appAddr + "/users/42"
				}
				tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true, Protocols: new(http.Protocols)}
				if proto == "h2c" {
					tr.Protocols.SetUnencryptedHTTP2(true)
				} else {
					tr.Protocols.SetHTTP1(true)
				}
				c := &http.Client{Transport: tr}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				req.Host = "users"
				do := func() {
					resp, err := c.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
				do() // warm the pools and the handshake
				b.ReportAllocs()
				// 64 concurrent requests, as bench/mesh.sh's max-throughput run.
				b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				cpu0, ok := cputime.Process()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						do()
					}
				})
				// CPU per request (client, agents and app together): less
				// skewed by other load on the machine than ns/op.
				if cpu1, ok1 := cputime.Process(); ok && ok1 {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}
