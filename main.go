// Command meshguard is the mesh agent and its small control plane in one
// binary: see DESIGN.md for the parts and README.md for a tour.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/meshguard/meshguard/internal/gcpace"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &runEnv{
		stdout:   os.Stdout,
		stderr:   os.Stderr,
		getenv:   os.Getenv,
		logger:   slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		setProcs: func(n int) { runtime.GOMAXPROCS(n) },
		gcPace: func(ctx context.Context, headroom uint64) {
			(&gcpace.Tuner{MaxHeadroom: headroom}).Run(ctx)
		},
	})
	stop()
	os.Exit(code)
}

// commands lists every subcommand. Each lives in a cmd_*.go file of its own.
func commands() []command {
	return []command{
		{"ca init", "create a CA directory (root, intermediate, provisioner) and print the root fingerprint", cmdCAInit},
		{"ca serve", "run the CA and the registry API", cmdCAServe},
		{"token create", "mint a single-use join token bound to one SPIFFE ID", cmdTokenCreate},
		{"agent", "run the workload agent (identity, Workload API, inbound/outbound proxy, admin)", cmdAgent},
		{"status", "print an agent's identity, expiry, policy, peers and routes", cmdStatus},
		{"policy test", "run the _test.rego files of a policy directory", cmdPolicyTest},
		{"policy eval", "evaluate a policy directory against an input document", cmdPolicyEval},
		{"registry list", "list services, endpoints, routes, owners and leases", cmdRegistryList},
		{"edge", "run an edge agent that exposes chosen mesh routes", cmdEdge},
		{"dev", "run a whole local mesh: CA, registry, three agents and demo apps", cmdDev},
		{"demo-app", "run one tiny demo HTTP service (used by dev, compose and the Kubernetes example)", cmdDemoApp},
		{"version", "print the version", cmdVersion},
	}
}

// run executes one command line and returns the process exit code:
// 0 ok, 1 runtime failure, 2 bad usage or configuration.
func run(ctx context.Context, args []string, env *runEnv) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printCommands(env.stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest, ok := findCommand(cmds, args)
	if !ok {
		fmt.Fprintf(env.stderr, "meshguard: unknown command %q\n\n", strings.Join(args[:min(2, len(args))], " "))
		printCommands(env.stderr, cmds)
		return 2
	}
	err := cmd.run(ctx, env, rest)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case isUsage(err):
		if msg := err.Error(); strings.HasPrefix(msg, "meshguard ") {
			fmt.Fprintln(env.stderr, msg) // already names the command
		} else {
			fmt.Fprintf(env.stderr, "meshguard: %s\n", msg)
		}
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	default:
		fmt.Fprintf(env.stderr, "meshguard %s: %v\n", cmd.name, err)
		return 1
	}
}

// findCommand matches the longest command name (one or two words) at the
// start of args.
func findCommand(cmds []command, args []string) (command, []string, bool) {
	if len(args) >= 2 {
		two := args[0] + " " + args[1]
		for _, c := range cmds {
			if c.name == two {
				return c, args[2:], true
			}
		}
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c, args[1:], true
		}
	}
	return command{}, nil, false
}

func cmdVersion(_ context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("version", env)
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, "meshguard", version)
	return nil
}
