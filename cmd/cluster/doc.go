// Package cluster holds the tests of a relay cluster: three real relay
// processes on one PostgreSQL database (a fresh database per test), real
// agents, and a product that reaches them through any node. They skip
// with a message when no PostgreSQL is configured.
package cluster
