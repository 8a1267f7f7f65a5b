// Package bench measures what the Postern tunnel costs compared with a
// direct TCP connection to the same target, in the same run on the same
// machine.
//
// It builds the real postern-relay and postern-agent binaries, wires them
// together on loopback (cloud client -> CONNECT proxy on the relay ->
// yamux over WebSocket -> agent -> target) and drives identical traffic
// both ways, interleaved so that machine noise hits both sides alike:
// bulk transfers on one and on eight streams, small HTTP requests on
// keep-alive connections, and a new CONNECT per request. The product is
// one table of direct, tunnel and tunnel/direct ratio, printed by
// `make bench`, plus the peak resident memory of both processes.
//
// The package holds only tests; plain `go test` runs a quick sanity check
// of the harness and no measurement.
package bench
