package main

import (
	"context"
	"errors"
)

func cmdAgent(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}

func cmdStatus(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}
