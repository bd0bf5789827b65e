package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/meshguard/meshguard/ca"
	"github.com/meshguard/meshguard/registry/etcdstore"
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
	storeSpec := fs.String("store", "", "registry store: empty for the embedded store in --dir ("+registryDBFile+"), or etcd://HOST:PORT[,HOST:PORT...] shared by several replicas")
	passwordFile := fs.String("password-file", "", "password file, if `ca init` encrypted the keys")
	var names stringList
	fs.Var(&names, "server-name", "extra DNS name or IP for the server certificate (repeatable)")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "dir", *dir); err != nil {
		return err
	}
	cfg := ca.Config{
		Dir:          *dir,
		Listen:       *listen,
		SVIDTTL:      *ttl,
		PasswordFile: *passwordFile,
		ServerNames:  names,
		Logger:       env.logger,
	}
	// Validate flags and the CA directory before any state is created, so
	// a bad flag or an unreadable key leaves the directory untouched; a
	// malformed --store is refused before the store is opened.
	if err := cfg.Check(); err != nil {
		return caError(err)
	}
	h, store, err := registryHandler(ctx, *dir, *storeSpec, env.logger)
	if err != nil {
		return err
	}
	defer store.Close()
	if strings.HasPrefix(*storeSpec, "etcd://") {
		// Replicas share etcd: used join tokens must be shared there too,
		// or a token could be redeemed once per replica.
		endpoints, err := etcdstore.ParseURL(*storeSpec)
		if err != nil {
			return usagef("ca serve: --store %q: %v", *storeSpec, err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return fmt.Errorf("token ledger: connect to etcd: %w", err)
		}
		defer cli.Close()
		cfg.TokenLedger = &etcdLedger{cli: cli, prefix: tokenLedgerPrefix, now: time.Now}
	}
	cfg.Registry = h
	srv, err := ca.NewServer(cfg)
	if err != nil {
		return caError(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error {
		if err := store.Run(gctx); err != nil {
			return fmt.Errorf("registry store: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// tokenLedgerPrefix is where `ca serve` replicas record used join tokens
// in etcd (beside the registry's keys).
const tokenLedgerPrefix = "/meshguard/ca/used-tokens/"

// etcdLedger is a ca.TokenLedger in etcd: one key per used token ID, on a
// lease that ends shortly after the token expires, created in a
// transaction that succeeds only if the key did not exist.
type etcdLedger struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// Use implements ca.TokenLedger.
func (l *etcdLedger) Use(ctx context.Context, tokenID string, expiry time.Time) (bool, error) {
	ttl := int64(math.Ceil(expiry.Sub(l.now()).Seconds())) + 1
	if ttl < 1 {
		ttl = 1
	}
	lease, err := l.cli.Grant(ctx, ttl)
	if err != nil {
		return false, fmt.Errorf("grant lease: %w", err)
	}
	key := l.prefix + tokenID
	resp, err := l.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, "", clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("record %s: %w", key, err)
	}
	if !resp.Succeeded {
		_, _ = l.cli.Revoke(ctx, lease.ID) // the key keeps its first lease
	}
	return resp.Succeeded, nil
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
