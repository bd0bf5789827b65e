package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/meshguard/meshguard/authz"
)

// cmdPolicyTest runs the _test.rego files of a policy directory with OPA's
// test runner, as `opa test DIR` would. A policy that does not compile is a
// usage error (exit 2) with file:line:column; failing tests exit 1.
func cmdPolicyTest(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("policy test", env)
	verbose := fs.Bool("v", false, "print every test result, not only failures")
	if err := parseFlags(fs, args, env, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("policy test: give the policy directory: meshguard policy test DIR")
	}
	dir := fs.Arg(0)
	if err := checkPolicyDir(dir); err != nil {
		return usagef("policy test: %v", err)
	}
	results, err := authz.TestDir(ctx, dir)
	if err != nil {
		return policyErr("policy test", err)
	}
	failed := 0
	for _, r := range results {
		if !r.Pass && !r.Skip {
			failed++
		}
		if *verbose || (!r.Pass && !r.Skip) {
			fmt.Fprintln(env.stdout, r)
		}
	}
	if len(results) == 0 {
		fmt.Fprintf(env.stdout, "no tests found in %s\n", dir)
		return nil
	}
	if failed > 0 {
		fmt.Fprintf(env.stdout, "FAIL: %d/%d\n", failed, len(results))
		return fmt.Errorf("%d of %d policy tests failed", failed, len(results))
	}
	fmt.Fprintf(env.stdout, "PASS: %d/%d\n", len(results), len(results))
	return nil
}

// cmdPolicyEval evaluates a policy directory against one input document
// and prints the Decision as JSON; --explain adds the rules that were true.
func cmdPolicyEval(ctx context.Context, env *runEnv, args []string) error {
	fs := newFlagSet("policy eval", env)
	dir := fs.String("policy", "", "policy directory (.rego files and data.json)")
	inputFile := fs.String("input", "", "input document (JSON, DESIGN.md's input schema)")
	explain := fs.Bool("explain", false, "also print the rules that were true for this input")
	timeout := fs.Duration("policy-timeout", authz.DefaultTimeout, "evaluation deadline")
	if err := parseFlags(fs, args, env, 0); err != nil {
		return err
	}
	if err := requireFlag(fs, "policy", *dir); err != nil {
		return err
	}
	if err := requireFlag(fs, "input", *inputFile); err != nil {
		return err
	}
	if *timeout <= 0 {
		return usagef("policy eval: --policy-timeout must be positive, got %s", *timeout)
	}
	if err := checkPolicyDir(*dir); err != nil {
		return usagef("policy eval: %v", err)
	}
	in, err := readInput(*inputFile)
	if err != nil {
		return usagef("policy eval: %v", err)
	}
	engine, err := authz.New(authz.Config{
		Dir:       *dir,
		Timeout:   *timeout,
		SkipTests: true, // show what the policy does even when its tests fail
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return usagef("policy eval: %v", err)
	}
	if err := engine.Ready(); err != nil {
		return policyErr("policy eval", err)
	}
	var d authz.Decision
	var rules []string
	if *explain {
		d, rules = engine.Explain(ctx, in)
	} else {
		d = engine.Decide(ctx, in)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding decision: %w", err)
	}
	fmt.Fprintln(env.stdout, string(out))
	if *explain {
		fmt.Fprintln(env.stdout, "\nrules true for this input:")
		for _, r := range rules {
			fmt.Fprintln(env.stdout, "  "+r)
		}
	}
	return nil
}

// policyErr maps a policy load error: a policy that does not compile is
// bad configuration (exit 2), anything else a runtime failure.
func policyErr(cmd string, err error) error {
	var pe *authz.PolicyError
	if errors.As(err, &pe) {
		return usagef("%s: %v", cmd, pe)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

func checkPolicyDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("policy directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("policy directory: %s is not a directory", dir)
	}
	return nil
}

// readInput reads one input document, refusing unknown fields and trailing
// data so that a typo in a field name is not silently evaluated as absent.
func readInput(name string) (*authz.Input, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var in authz.Input
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("input %s: %w", name, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("input %s: more than one JSON document", name)
	}
	return &in, nil
}
