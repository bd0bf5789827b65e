package registry_test

import (
	"fmt"

	"github.com/meshguard/meshguard/registry"
)

// The outbound proxy asks the table which service owns a path (longest
// route prefix, on segment boundaries) and where its endpoints are.
func ExampleTable() {
	mk := func(svc, addr string, routes ...string) registry.Entry {
		e := registry.Entry{Service: svc, SPIFFEID: "spiffe://example.org/svc/" + svc, Address: addr, Routes: routes}
		e.Normalize()
		return e
	}
	t := registry.NewTable(42, []registry.Entry{
		mk("api", "10.0.0.1:15443", "/api"),
		mk("users", "10.0.0.2:15443", "/api/users"),
		mk("users", "10.0.0.3:15443", "/api/users"),
	})
	for _, p := range []string{"/api/users/7", "/api/usersx", "/other"} {
		svc, ok := t.Route(p)
		fmt.Println(p, "->", svc, ok, len(t.Endpoints(svc)))
	}
	// Output:
	// /api/users/7 -> users true 2
	// /api/usersx -> api true 1
	// /other ->  false 0
}
