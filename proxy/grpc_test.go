package proxy

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGRPCThroughTwoAgents: gRPC unary and server-streaming calls (the
// grpc-go health service) pass through outbound → inbound → h2c app, with
// the grpc-status trailer carried both for success and for an error.
func TestGRPCThroughTwoAgents(t *testing.T) {
	ln := listen(t)
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	m := newMesh(t, meshOpts{appAddr: ln.Addr().String(), inTweak: func(c *InboundConfig) { c.AppProtocol = AppH2C }})
	cc, err := grpc.NewClient("passthrough:///"+m.out.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("users"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := healthpb.NewHealthClient(cc)

	// Unary, OK status in trailers.
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "users"})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check status %v", resp.Status)
	}
	// Unary, error status in trailers.
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check(unknown) = %v, want NotFound", err)
	}
	// Server streaming: the first status, then a change pushed by the app.
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "users"})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	first, err := stream.Recv()
	if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v", first, err)
	}
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_NOT_SERVING)
	second, err := stream.Recv()
	if err != nil || second.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch second = %v, %v", second, err)
	}
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)
	third, err := stream.Recv()
	if err != nil || third.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch third = %v, %v", third, err)
	}
	if in := m.authz.last(t); in.Request.Path != "/grpc.health.v1.Health/Watch" || in.Request.Protocol != "HTTP/2.0" || in.Request.Headers["content-type"] != "application/grpc" {
		t.Fatalf("policy input %+v", in.Request)
	}
	if got := handshakes(m.webM, dirOutbound); got != 1 {
		t.Fatalf("outbound handshakes = %v, want 1", got)
	}
}
