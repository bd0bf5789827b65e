package main

import (
	"context"
	"errors"
)

func cmdRegistryList(_ context.Context, _ *runEnv, _ []string) error {
	return errors.New("this command is not built yet")
}
