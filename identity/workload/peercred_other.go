//go:build !linux

package workload

import (
	"errors"
	"net"
)

// peerCred is not implemented off Linux: every caller is refused (fail
// closed) rather than served unattested.
func peerCred(net.Conn) (PeerCred, error) {
	return PeerCred{}, errors.New("peer credentials: not supported on this platform")
}
