// Package relay is one node of the cloud side of Postern. It wires the
// parts that do the work and serves them on two listeners:
//
//   - the API listener: agent tunnels at /v1/tunnel (authenticated by
//     relay/auth, upgraded by protocol/tunnel, run by relay/broker), the
//     HTTP API of relay/admin, /healthz, /readyz and /metrics;
//   - the proxy listener: the product's CONNECT proxy (relay/proxy), which
//     reaches agents through relay/router and relay/broker.
//
// Status and its events are relay/status, relay/events and relay/webhook;
// persistence is behind relay/store. The relay judges targets only to
// report a verdict from the rules an agent reported (status with
// base_url); every stream is decided by the agent. Flags and config files
// live in cmd/postern-relay.
package relay
