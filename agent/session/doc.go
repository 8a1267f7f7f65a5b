// Package session runs one tunnel from the agent to a relay. Open dials
// through protocol/tunnel and says Hello; Serve then reads the relay's
// notices, reports Health every heartbeat (and at once when the Reporter
// says something changed) and hands every stream the relay opens to a
// Handler; Drain lets open streams finish within a bound after a GoAway
// or a stop, and Close cuts them.
//
// A Session owns every goroutine it starts and Close waits for them. It
// does not decide targets (the Handler does), keep several tunnels up,
// reconnect or back off: that is the supervisor's job, in package agent.
package session
