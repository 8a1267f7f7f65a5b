// Package e2e holds the end-to-end tests of Postern: a relay, an agent and
// a target wired together in one process over real loopback sockets, and
// the real binaries driven the way a user drives them. It is the only
// place outside the two commands that joins agent and relay.
package e2e
