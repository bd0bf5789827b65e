// Package clock is injectable time: Real for production, Fake for tests that
// must move time without sleeping. Any type with Now and After satisfies the
// small Clock interfaces the consuming packages declare.
package clock
