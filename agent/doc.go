// Package agent is the customer side of Postern, and this package is its
// supervisor: it keeps Config.Tunnels tunnels to the relay up, each slot
// reconnecting forever with jittered backoff (longer after a refused token
// or when the relay asks for a pause), replaces a tunnel at once when the
// relay sends GoAway while the old one drains, drains on stop (Force cuts
// the drain), tells every tunnel who the agent is and how it does (Hello,
// Health), swaps the allowlist on reload, and serves the local status
// endpoint.
//
// The jobs below it live in their own packages:
//
//   - agent/session runs one tunnel: dial, handshake, relay notices,
//     Health, and hands every relay-opened stream to a handler;
//   - agent/stream is that handler: for each stream the relay opens it
//     reads the request, asks the gate, dials, answers and splices, or runs
//     a live check, and audits it;
//   - agent/policy is the gate: the allowlist in force, one resolution with
//     the customer's DNS, every resolved address checked, and a Decision
//     naming the addresses that may be dialled;
//   - agent/config parses the file, agent/resolve is the DNS client,
//     agent/audit the local audit log, agent/doctor the diagnosis.
//
// The agent never trusts the relay's view of a target: the allowlist is
// applied here, inside the customer's network. This package decides no
// target and reads no frame of a stream itself; cmd/postern-agent wires it.
package agent
