// Package faults injects real faults into a running Postern system and
// checks that relay and agent notice them, recover, and stay within the
// budgets of the design: a lossy, sliced, reset or silent link between
// agent and relay (toxiproxy on loopback), stopped and killed processes, a
// target that reads nothing, and garbage or oversized input on the relay's
// listeners.
//
// The faults hit the real postern-relay and postern-agent binaries, built
// once per test run, so that memory and file descriptors are those of the
// programs an operator runs. The package holds tests only. TestFault* are
// the fast subset that `make test` runs; TestSoak* run for minutes and
// only with POSTERN_SOAK=1 (`make soak`).
package faults
