// Package workload serves the SPIFFE Workload API (gRPC over a unix socket)
// to the local workload, from an identity source that can say when it
// changed: FetchX509SVID and FetchX509Bundles stream the agent's SVID and
// bundle and push every rotation; the JWT-SVID and WIT-SVID calls answer
// codes.Unimplemented.
//
// Every call must carry the `workload.spiffe.io: true` metadata (else
// InvalidArgument, as SPIRE answers) and come from a process whose uid, read
// from the socket with SO_PEERCRED, is the configured one (else
// PermissionDenied). The socket file is created 0600 (0660 when the
// allowed uid is not the agent's own) and a stale one is removed at start.
//
// Usage:
//
//	srv, err := workload.Listen(workload.Config{Path: "/run/meshguard/workload.sock", UID: os.Getuid(), Source: src})
//	if err != nil { ... }
//	go srv.Run(ctx) // serves until ctx ends, then removes the socket
//
// Any SPIFFE library can then use it, e.g. go-spiffe's
// workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix:///run/meshguard/workload.sock"))).
//
// It imports no meshguard package except internal ones; the source is
// consumed through the small Source interface declared here.
package workload
