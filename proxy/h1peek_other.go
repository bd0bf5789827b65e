//go:build !unix

package proxy

import "net"

// idleConnUsable cannot peek without blocking on this platform; a request
// with a body on a connection the app closed while idle fails instead.
func idleConnUsable(net.Conn) bool { return true }
