package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
)

// envPrefix is prepended to a flag's upper-cased name to form the environment
// variable that can set it: --ca-fingerprint is MESHGUARD_CA_FINGERPRINT.
const envPrefix = "MESHGUARD_"

// usageError marks bad usage or bad configuration: the process exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns an error that makes the process exit with code 2.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errHelp is returned when -h or --help was asked for: exit 0, nothing more
// to print.
var errHelp = errors.New("help requested")

// isUsage reports whether err (or anything it wraps) is a usage error.
func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// runEnv is what every subcommand gets from main: its streams, its
// environment and its logger. Nothing is read from globals.
type runEnv struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	logger *slog.Logger
	// setProcs sets the scheduler's processor count (runtime.GOMAXPROCS in
	// the real process; nil in tests, which share one process).
	setProcs func(int)
	// gcPace lets the heap grow up to headroom bytes between collections
	// under load until ctx ends (internal/gcpace in the real process; nil
	// in tests, which share one process).
	gcPace func(ctx context.Context, headroom uint64)
}

// command is one subcommand, e.g. "ca init".
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *runEnv, args []string) error
}

// newFlagSet returns a flag set for a subcommand that reports errors instead
// of exiting, so that run can map them to exit code 2.
func newFlagSet(name string, env *runEnv) *flag.FlagSet {
	fs := flag.NewFlagSet("meshguard "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// flagGiven reports whether flag name was set, on the command line or from
// its MESHGUARD_* variable (after parseFlags).
func flagGiven(fs *flag.FlagSet, name string) (given bool) {
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// parseFlags parses args, then fills every flag not given on the command line
// from MESHGUARD_<FLAG> in the environment. Command-line values win. A flag
// implementing repeatable (a list) takes a comma-separated environment value.
// Positional arguments are refused unless maxArgs allows them.
func parseFlags(fs *flag.FlagSet, args []string, env *runEnv, maxArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp // the flag package has printed the usage
		}
		return usagef("%s: %v", fs.Name(), err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		key := envName(f.Name)
		val := env.getenv(key)
		if val == "" {
			return
		}
		values := []string{val}
		if _, ok := f.Value.(repeatable); ok {
			values = strings.Split(val, ",")
		}
		for _, v := range values {
			if err := fs.Set(f.Name, strings.TrimSpace(v)); err != nil {
				envErr = usagef("%s: invalid value %q for environment variable %s: %v", fs.Name(), v, key, err)
				return
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if fs.NArg() > maxArgs {
		return usagef("%s: unexpected argument %q (flags go before arguments; see --help)", fs.Name(), fs.Arg(maxArgs))
	}
	return nil
}

// envName is the environment variable that sets flag name.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// repeatable marks flag values that may be given several times.
type repeatable interface{ repeatable() }

// stringList is a repeatable string flag (--route /a --route /b).
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*s = append(*s, v)
	return nil
}
func (s *stringList) repeatable() {}

// requireFlag returns a usage error when a mandatory flag is empty.
func requireFlag(fs *flag.FlagSet, name, value string) error {
	if value == "" {
		return usagef("%s: --%s is required (or set %s)", fs.Name(), name, envName(name))
	}
	return nil
}

// printCommands writes the list of subcommands, for `meshguard help` and bad usage.
func printCommands(w io.Writer, cmds []command) {
	sorted := append([]command(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	fmt.Fprintln(w, "usage: meshguard <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set as MESHGUARD_<FLAG> (e.g. MESHGUARD_CA_FINGERPRINT).")
}
