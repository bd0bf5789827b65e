//go:build !unix

package proxy

import "time"

func processCPUTime() (time.Duration, bool) { return 0, false }
