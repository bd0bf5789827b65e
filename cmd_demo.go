package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/meshguard/meshguard/internal/demo"
)

// cmdDemoApp runs one demo service (for compose, Kubernetes and manual tours).
func cmdDemoApp(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("demo-app", env)
	name := fs.String("name", "", "service name to answer as (web, users, billing, ...)")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "name", *name); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usagef("demo-app: --listen %s: %v", *listen, err)
	}
	return serveDemo(ctx, ln, *name, env)
}

// serveDemo serves demo service name on ln until ctx is done.
func serveDemo(ctx context.Context, ln net.Listener, name string, env *runEnv) error {
	srv := &http.Server{Handler: demo.Handler(name), ReadHeaderTimeout: 5 * time.Second}
	env.logger.Info("demo app listening", "service", name, "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving demo app %s: %w", name, err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("stopping demo app %s: %w", name, err)
		}
		return nil
	}
}
