package workload

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/meshguard/meshguard/internal/logkey"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Header is the metadata key every Workload API call must carry with the
// value "true"; it stops a browser or proxy from being tricked into calling.
const Header = "workload.spiffe.io"

// maxSunPath is the longest socket path the kernel accepts (sun_path minus
// the terminating NUL).
const maxSunPath = 107

// Source is what the server needs from the agent's identity.
type Source interface {
	GetX509SVID() (*x509svid.SVID, error)
	GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error)
	// Changed returns a channel closed at the next SVID or bundle change.
	Changed() <-chan struct{}
}

// Config configures a Server.
type Config struct {
	Path   string       // the unix socket file (--workload-socket)
	UID    int          // the only caller uid served (--workload-uid)
	Source Source       // the agent's identity
	Logger *slog.Logger // default: discard
}

// PeerCred is a caller's process credentials, read from the socket.
type PeerCred struct {
	UID, GID, PID int
}

// Server is a running Workload API endpoint.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ln   *net.UnixListener
	grpc *grpc.Server
	stop chan struct{} // closed at shutdown so streaming handlers return
	once sync.Once
}

// Listen creates the socket (removing a stale one) and returns a server
// ready to Run. The socket is 0600 when UID is the agent's own uid, else 0660
// (the workload then needs the socket's group).
func Listen(cfg Config) (*Server, error) {
	switch {
	case cfg.Path == "":
		return nil, errors.New("workload api: socket path is empty")
	case len(cfg.Path) > maxSunPath:
		return nil, fmt.Errorf("workload api: socket path %q is %d bytes, longer than the %d a unix socket allows", cfg.Path, len(cfg.Path), maxSunPath)
	case cfg.UID < 0:
		return nil, fmt.Errorf("workload api: invalid uid %d", cfg.UID)
	case cfg.Source == nil:
		return nil, errors.New("workload api: no identity source")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := removeStale(cfg.Path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("workload api: listen on %s: %w", cfg.Path, err)
	}
	mode := fs.FileMode(0o600)
	if cfg.UID != os.Getuid() {
		mode = 0o660
	}
	if err := os.Chmod(cfg.Path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workload api: chmod %s: %w", cfg.Path, err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With(logkey.Component, "workload-api"), ln: ln, stop: make(chan struct{})}
	s.grpc = grpc.NewServer(
		grpc.Creds(peerCredentials{}),
		grpc.ChainUnaryInterceptor(s.unaryGuard),
		grpc.ChainStreamInterceptor(s.streamGuard),
		grpc.MaxRecvMsgSize(64<<10),
		grpc.MaxConcurrentStreams(64),
		grpc.ConnectionTimeout(5*time.Second),
	)
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, &handler{src: cfg.Source, stop: s.stop})
	return s, nil
}

// removeStale deletes a socket file nobody serves any more. It refuses to
// touch a file that is not a socket, or a socket someone still answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workload api: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("workload api: %s exists and is not a socket; refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("workload api: another process is serving on %s", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("workload api: remove stale socket %s: %w", path, err)
	}
	return nil
}

// Addr is the socket address.
func (s *Server) Addr() string { return "unix://" + s.cfg.Path }

// Run serves until ctx ends, then ends the open streams, stops and removes
// the socket.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.ln) }()
	s.log.Info("Workload API listening", logkey.Addr, s.Addr(), "uid", s.cfg.UID)
	select {
	case <-ctx.Done():
		s.Close()
		<-errc
		return nil
	case err := <-errc:
		s.Close()
		if err != nil {
			return fmt.Errorf("workload api: serve: %w", err)
		}
		return nil
	}
}

// Close stops the server and removes the socket; it is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.stop)
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.grpc.Stop()
			<-done
		}
		s.ln.Close() // removes the socket file (unlink on close)
	})
	return nil
}

// authorize checks the security header, then the caller's uid.
func (s *Server) authorize(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(Header); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "caller could not be attested")
	}
	ai, ok := p.AuthInfo.(authInfo)
	if !ok {
		return status.Error(codes.PermissionDenied, "caller could not be attested")
	}
	if ai.Cred.UID != s.cfg.UID {
		s.log.Warn("Workload API caller refused", "uid", ai.Cred.UID, "pid", ai.Cred.PID, "method", method)
		return status.Errorf(codes.PermissionDenied, "caller uid %d is not allowed", ai.Cred.UID)
	}
	return nil
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return next(ctx, req)
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return next(srv, ss)
}

// handler implements the Workload API; the JWT and WIT calls fall through
// to the embedded Unimplemented server.
type handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	src  Source
	stop <-chan struct{}
}

// FetchX509SVID sends the SVID, key and bundle, then again at each change.
func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	var last []byte
	for {
		changed := h.src.Changed()
		resp, key, err := h.x509SVIDResponse()
		if err != nil {
			return status.Errorf(codes.Unavailable, "no identity available: %v", err)
		}
		if !bytes.Equal(key, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = key
		}
		if err := h.wait(stream.Context(), changed); err != nil {
			return err
		}
	}
}

// FetchX509Bundles sends the trust bundle, then again at each change.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	var last []byte
	for {
		changed := h.src.Changed()
		svid, err := h.src.GetX509SVID()
		if err != nil {
			return status.Errorf(codes.Unavailable, "no identity available: %v", err)
		}
		td := svid.ID.TrustDomain()
		bundle, err := h.src.GetX509BundleForTrustDomain(td)
		if err != nil {
			return status.Errorf(codes.Unavailable, "no bundle available: %v", err)
		}
		raw := concatDER(bundle.X509Authorities())
		if !bytes.Equal(raw, last) {
			if err := stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{td.IDString(): raw}}); err != nil {
				return err
			}
			last = raw
		}
		if err := h.wait(stream.Context(), changed); err != nil {
			return err
		}
	}
}

// wait returns nil at the next change, and an error when the caller leaves
// or the server stops.
func (h *handler) wait(ctx context.Context, changed <-chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-h.stop:
		return status.Error(codes.Unavailable, "server shutting down")
	}
}

// x509SVIDResponse builds the response and a key identifying its content.
func (h *handler) x509SVIDResponse() (*workload.X509SVIDResponse, []byte, error) {
	svid, err := h.src.GetX509SVID()
	if err != nil {
		return nil, nil, err
	}
	bundle, err := h.src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal SVID key: %w", err)
	}
	chain := concatDER(svid.Certificates)
	roots := concatDER(bundle.X509Authorities())
	resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    chain,
		X509SvidKey: keyDER,
		Bundle:      roots,
	}}}
	return resp, append(append([]byte(nil), chain...), roots...), nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, c.Raw...)
	}
	return b
}

// peerCredentials is a gRPC transport "security" that authenticates
// nothing on the wire and records the caller's SO_PEERCRED as AuthInfo.
type peerCredentials struct{}

type authInfo struct {
	credentials.CommonAuthInfo
	Cred PeerCred
}

func (authInfo) AuthType() string { return "peercred" }

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload api: peer credentials are server-side only")
}

func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cred, err := peerCred(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, authInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, Cred: cred}, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }
