package main

import (
	"context"
	"errors"
)

func cmdCAInit(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}

func cmdCAServe(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}

func cmdTokenCreate(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}
