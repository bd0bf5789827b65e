package main

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/ca"
)

// caError maps the ca package's configuration errors (bad trust domain,
// uninitialised or unreadable directory, wrong password) to exit code 2.
func caError(err error) error {
	var ce *ca.ConfigError
	if errors.As(err, &ce) {
		return usagef("%v", err)
	}
	return err
}

func cmdCAInit(_ context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("ca init", env)
	dir := fs.String("dir", "", "CA directory to create (keys are written mode 0600)")
	td := fs.String("trust-domain", "", "trust domain, e.g. example.org")
	passwordFile := fs.String("password-file", "", "file whose content encrypts the private keys (default: unencrypted)")
	force := fs.Bool("force", false, "replace an existing CA in --dir (its database included)")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "dir", *dir); err != nil {
		return err
	}
	if err := requireFlag(fs, "trust-domain", *td); err != nil {
		return err
	}
	fp, err := ca.Init(ca.InitConfig{Dir: *dir, TrustDomain: *td, PasswordFile: *passwordFile, Force: *force})
	if err != nil {
		return caError(err)
	}
	fmt.Fprintln(env.stdout, fp)
	return nil
}

func cmdCAServe(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("ca serve", env)
	dir := fs.String("dir", "", "CA directory written by `meshguard ca init`")
	listen := fs.String("listen", ca.DefaultListen, "HTTPS listen address (its host goes into the server certificate)")
	ttl := fs.Duration("svid-ttl", ca.DefaultSVIDTTL, "lifetime of issued SVIDs")
	passwordFile := fs.String("password-file", "", "password file, if `ca init` encrypted the keys")
	storeSpec := fs.String("store", "", "registry store: empty for the embedded store in --dir, or etcd://HOST:PORT[,HOST:PORT...]")
	var names stringList
	fs.Var(&names, "server-name", "extra DNS name or IP for the server certificate (repeatable)")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "dir", *dir); err != nil {
		return err
	}
	// The registry API is mounted now and filled in once its store is open:
	// the store is opened only after the CA's own configuration checked out,
	// so a bad flag or an unreadable key leaves the directory untouched.
	regAPI := &lateHandler{}
	srv, err := ca.NewServer(ca.Config{
		Dir:          *dir,
		Listen:       *listen,
		SVIDTTL:      *ttl,
		PasswordFile: *passwordFile,
		ServerNames:  names,
		Registry:     regAPI,
		Logger:       env.logger,
	})
	if err != nil {
		return caError(err)
	}
	h, store, err := registryHandler(ctx, *dir, *storeSpec, env.logger)
	if err != nil {
		return err
	}
	defer store.Close()
	regAPI.set(h)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return store.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}

func cmdTokenCreate(_ context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("token create", env)
	dir := fs.String("dir", "", "CA directory written by `meshguard ca init`")
	idFlag := fs.String("spiffe-id", "", "SPIFFE ID the token is bound to: spiffe://TD/svc/NAME")
	ttl := fs.Duration("ttl", ca.DefaultTokenTTL, "how long the token stays valid (it is single use either way)")
	passwordFile := fs.String("password-file", "", "password file, if `ca init` encrypted the keys")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "dir", *dir); err != nil {
		return err
	}
	if err := requireFlag(fs, "spiffe-id", *idFlag); err != nil {
		return err
	}
	id, err := spiffeid.FromString(*idFlag)
	if err != nil {
		return usagef("token create: --spiffe-id %q is not a SPIFFE ID (want spiffe://TD/svc/NAME): %v", *idFlag, err)
	}
	if *ttl <= 0 || *ttl > ca.MaxTokenTTL {
		return usagef("token create: --ttl %s out of range (0, %s]", *ttl, ca.MaxTokenTTL)
	}
	tok, err := ca.NewToken(ca.TokenConfig{Dir: *dir, ID: id, TTL: *ttl, PasswordFile: *passwordFile, Now: time.Now})
	if err != nil {
		return caError(err)
	}
	fmt.Fprintln(env.stdout, tok)
	return nil
}
