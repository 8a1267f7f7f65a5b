// Package testkit is what the agent's tests share: a parsed config, a
// resolver that asks only the test's DNS server, services inside the
// "customer network" (loopback listeners that count what they accept), a
// recorder of the addresses dialled, a sink for logs an operator would
// read, and the fake relay's side of a dial request.
//
// It is for tests only (it imports testing); every listener and goroutine
// it starts ends in the test's cleanup. The fake relay itself is
// protocol/tunnel/tunneltest, the fake DNS server agent/resolve/dnstest.
package testkit
