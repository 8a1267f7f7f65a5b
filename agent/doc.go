// Package agent is the customer side of Postern. It keeps outbound
// WebSocket tunnels to the relay (yamux inside, reconnecting forever with
// jittered backoff), reports health on the control stream, and for every
// stream the relay opens it decides with the customer's allowlist,
// resolves with the customer's DNS, checks every resolved address, dials
// only an address it checked, and splices bytes.
//
// The agent never trusts the relay's view of a target: the allowlist is
// applied here, inside the customer's network. Configuration parsing
// lives in agent/config, DNS in agent/resolve; cmd/postern-agent wires
// them.
package agent
