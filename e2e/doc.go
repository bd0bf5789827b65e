// Package e2e holds end-to-end tests that build the meshguard binary and
// drive real processes on loopback, as a user would: ca init, ca serve,
// tokens, agents, demo apps, policy edits, rotation and shutdowns.
package e2e
