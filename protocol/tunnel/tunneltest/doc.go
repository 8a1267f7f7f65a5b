// Package tunneltest runs either end of the Postern wire protocol inside a
// test, the way net/http/httptest runs a server: Relay accepts agent
// tunnels on loopback and lets the test open streams and send notices;
// Agent dials a relay, completes the handshake and answers the streams the
// relay opens. Both are built from package tunnel, the transport of the
// real programs, so each end is tested against the exact wire of the other.
//
// It is for tests only: every wait is bounded, every goroutine it starts
// ends when the test's cleanup runs.
package tunneltest

import "time"

// WaitTimeout bounds every wait in this package: nothing legitimate on
// loopback takes this long, so reaching it means a hang.
const WaitTimeout = 5 * time.Second
