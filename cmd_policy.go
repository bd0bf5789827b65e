package main

import (
	"context"
	"errors"
)

func cmdPolicyTest(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}

func cmdPolicyEval(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}
