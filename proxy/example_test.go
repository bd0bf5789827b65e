package proxy_test

import (
	"fmt"

	"github.com/meshguard/meshguard/proxy"
)

func ExampleParsePeer() {
	ep, err := proxy.ParsePeer("users=spiffe://example.org/svc/users@127.0.0.1:15443")
	if err != nil {
		panic(err)
	}
	fmt.Println(ep.Service, ep.ID, ep.Addr)
	_, err = proxy.ParsePeer("users=spiffe://example.org@127.0.0.1:15443")
	fmt.Println(err)
	// Output:
	// users spiffe://example.org/svc/users 127.0.0.1:15443
	// parse peer "users=spiffe://example.org@127.0.0.1:15443": SPIFFE ID spiffe://example.org names a trust domain, not a workload
}

func ExampleNormalizePath() {
	for _, target := range []string{"/public/%2e%2e/admin?x=1", "//admin/./", "/a%2Fb"} {
		path, query, err := proxy.NormalizePath(target)
		fmt.Printf("%q %q %v\n", path, query, err)
	}
	// Output:
	// "/admin" "x=1" <nil>
	// "/admin/" "" <nil>
	// "" "" encoded slash (%2F) in path
}
