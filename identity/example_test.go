package identity_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshguard/meshguard/identity"
)

// An SVID valid for an hour is renewed between 24 and 36 minutes into its
// life; the caller draws the jitter in [-1, 1].
func ExampleNextRotation() {
	nb := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(time.Hour)}
	for _, jitter := range []float64{-1, 0, 1} {
		fmt.Println(identity.NextRotation(nb, cert, jitter).Format("15:04"))
	}
	// A retry after failures waits longer each time, up to a cap.
	for attempt := range 4 {
		fmt.Print(identity.Backoff(attempt, time.Second, 5*time.Second), " ")
	}
	fmt.Println()
	// Output:
	// 12:24
	// 12:30
	// 12:36
	// 1s 2s 4s 5s
}
