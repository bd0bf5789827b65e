package registry

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

func te(svc, addr string, routes ...string) Entry {
	e := Entry{Service: svc, SPIFFEID: "spiffe://example.org/svc/" + svc, Address: addr, Routes: routes}
	e.Normalize()
	return e
}

func TestTableRoute(t *testing.T) {
	tab := NewTable(3, []Entry{
		te("web", "10.0.0.1:1", "/"),
		te("api", "10.0.0.2:1", "/api"),
		te("users", "10.0.0.3:1", "/api/users"),
		te("users", "10.0.0.4:1", "/api/users"),
	})
	tests := []struct{ path, want string }{
		{"/", "web"},
		{"/index.html", "web"},
		{"/api", "api"},
		{"/api/", "api"},
		{"/apix", "web"},
		{"/api/users", "users"},
		{"/api/users/42", "users"},
		{"/api/usersx", "api"},
		{"relative", ""},
	}
	for _, tt := range tests {
		got, ok := tab.Route(tt.path)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Route(%q) = %q, %v; want %q", tt.path, got, ok, tt.want)
		}
	}
	if eps := tab.Endpoints("users"); len(eps) != 2 || eps[0].Address != "10.0.0.3:1" {
		t.Fatalf("Endpoints(users) = %+v", eps)
	}
	if tab.Len() != 4 || tab.Revision() != 3 || !reflect.DeepEqual(tab.Services(), []string{"api", "users", "web"}) {
		t.Fatalf("Len %d Revision %d Services %v", tab.Len(), tab.Revision(), tab.Services())
	}
	var nilTable *Table
	if _, ok := nilTable.Route("/"); ok || nilTable.Endpoints("x") != nil || nilTable.Revision() != 0 {
		t.Fatal("nil table answers")
	}
}

func TestTableApplyRoutes(t *testing.T) {
	tab := NewTable(1, []Entry{te("users", "a:1", "/users"), te("users", "b:1", "/users")})
	// One endpoint leaves: the route stays with the service.
	tab = tab.apply(Event{Type: EventDelete, Revision: 2, Entry: &Entry{Service: "users", Address: "a:1"}})
	if svc, _ := tab.Route("/users/1"); svc != "users" {
		t.Fatalf("route lost with one endpoint left: %q", svc)
	}
	// The last one drops the route: it is free.
	tab = tab.apply(Event{Type: EventDelete, Revision: 3, Entry: &Entry{Service: "users", Address: "b:1"}})
	if svc, ok := tab.Route("/users/1"); ok {
		t.Fatalf("route still owned by %q", svc)
	}
	// Another service claims it.
	e := te("people", "c:1", "/users")
	tab = tab.apply(Event{Type: EventPut, Revision: 4, Entry: &e})
	if svc, _ := tab.Route("/users/1"); svc != "people" {
		t.Fatalf("route owner %q, want people", svc)
	}
	// An upsert that drops the route.
	e2 := te("people", "c:1", "/people")
	tab = tab.apply(Event{Type: EventPut, Revision: 5, Entry: &e2})
	if _, ok := tab.Route("/users/1"); ok {
		t.Fatal("dropped route still routed")
	}
	if tab.Len() != 1 || tab.Revision() != 5 {
		t.Fatalf("Len %d Revision %d", tab.Len(), tab.Revision())
	}
}

// TestTableApplyMatchesRebuild: any sequence of changes, with overlay
// compactions on the way, gives the same answers as a table built afresh.
func TestTableApplyMatchesRebuild(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	state := map[Key]Entry{}
	tab := NewTable(0, nil)
	routes := []string{"/", "/a", "/a/b", "/c", "/d/e"}
	for rev := int64(1); rev <= 3000; rev++ {
		svc := fmt.Sprintf("s%d", r.IntN(200))
		addr := fmt.Sprintf("h%d:1", r.IntN(3))
		var ev Event
		if r.IntN(3) == 0 {
			ev = Event{Type: EventDelete, Revision: rev, Entry: &Entry{Service: svc, Address: addr}}
			delete(state, Key{svc, addr})
		} else {
			var rs []string
			// Keep route ownership unique like the server does.
			owner := map[string]string{}
			for _, e := range state {
				for _, x := range e.Routes {
					owner[x] = e.Service
				}
			}
			for _, x := range routes {
				if o, taken := owner[x]; r.IntN(4) == 0 && (!taken || o == svc) {
					rs = append(rs, x)
				}
			}
			e := te(svc, addr, rs...)
			ev = Event{Type: EventPut, Revision: rev, Entry: &e}
			state[e.Key()] = e
		}
		tab = tab.apply(ev)
		if rev%97 == 0 || rev == 3000 {
			var all []Entry
			for _, e := range state {
				all = append(all, e)
			}
			want := NewTable(rev, all)
			if !reflect.DeepEqual(tab.Entries(), want.Entries()) {
				t.Fatalf("revision %d: entries differ", rev)
			}
			if tab.Len() != want.Len() {
				t.Fatalf("revision %d: Len %d, want %d", rev, tab.Len(), want.Len())
			}
			for _, p := range []string{"/", "/a", "/a/b/c", "/c/x", "/d", "/d/e/f", "/z"} {
				g1, ok1 := tab.Route(p)
				g2, ok2 := want.Route(p)
				if g1 != g2 || ok1 != ok2 {
					t.Fatalf("revision %d: Route(%q) = %q,%v; rebuilt %q,%v", rev, p, g1, ok1, g2, ok2)
				}
			}
		}
	}
}
