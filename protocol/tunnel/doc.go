// Package tunnel is the transport under the Postern wire protocol: a
// WebSocket carrying one yamux session, as spec.md sections 3 and 4
// describe it. It owns everything both ends must do alike — the tunnel URL,
// the subprotocol, the read limit, write coalescing and batching, the yamux
// settings (Config, in one place), the Hello/Welcome handshake on the
// control stream, and the data-phase splice — so that agent, relay and
// doctor dial or accept only through it.
//
// The HTTP side stays thin, as in a handler that only upgrades: Upgrade
// turns an HTTP request into a net.Conn and Server runs the session on it
// without knowing anything of HTTP. Dial is the agent's side of the same.
//
// It knows the frames of package protocol and nothing of allowlists,
// stores, APIs or reason policy: who may open a tunnel, and what a stream
// is allowed to reach, are decided by the relay and the agent.
package tunnel
