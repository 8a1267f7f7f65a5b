// Package testkit is the harness shared by the tests under cmd/ (e2e,
// faults, bench and the commands' own tests): it builds the real
// postern-relay and postern-agent binaries once per test binary, runs
// them as child processes it stops again at the end of each test, reads
// their resource use from /proc, and provides the small loopback pieces
// those tests have in common — a free address, a polling wait, an echo
// target with its deterministic byte pattern, a CONNECT through the
// relay's proxy listener, an event stream followed to its end, an
// agent's config and token files, the admin key a relay bootstrapped, and
// the parts of a credential.
//
// It owns no Postern behaviour and imports nothing of the project: what a
// relay or agent must do is asserted by the tests that use it. It is
// imported by tests only; the commands never link it.
package testkit
