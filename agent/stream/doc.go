// Package stream serves the streams the relay opens on a tunnel. Each
// starts with one request frame: for a dial, the server asks the gate
// (agent/policy), dials an address the gate checked, answers one result
// frame and splices bytes both ways with half-close; for a check, it
// walks the path to a base URL layer by layer (allowlist, DNS, TCP, TLS,
// HTTP) and answers the verdict. Every stream ends in one audit entry
// and in the counters Health reports.
//
// It never decides a target itself and never dials the relay: the gate
// decides, and the tunnel the streams arrive on is agent/session's.
package stream
