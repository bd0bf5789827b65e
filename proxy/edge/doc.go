// Package edge is meshguard's DMZ: a public listener that exposes only listed
// route prefixes of the mesh, rewrites prefixes, limits each client's rate
// with nginx limit_req semantics, records the client in X-Forwarded-For and
// Forwarded (never trusting the outside's values), strips every mesh identity
// header from outside requests, and forwards into the mesh through the
// agent's own outbound path with the edge's SVID.
//
// It is part of the proxy layer: it may import proxy, never ca.
package edge
