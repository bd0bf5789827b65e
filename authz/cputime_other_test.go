//go:build !unix

package authz

import "time"

func processCPUTime() (time.Duration, bool) { return 0, false }
