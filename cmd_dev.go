package main

import (
	"context"
	"errors"
)

func cmdDev(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}
