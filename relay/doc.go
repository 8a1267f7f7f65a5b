// Package relay is the cloud side of Postern. It accepts agent tunnels on
// /v1/tunnel (WebSocket carrying yamux), keeps a registry of the live
// sessions of each connection, answers the product's HTTP CONNECT proxy
// requests by opening a stream to the right agent, and serves the admin
// API (connections, tokens, API keys, status).
//
// It never judges targets itself: the agent decides with its allowlist and
// the relay passes the agent's reason code through unchanged. Persistence
// is behind relay/store; wiring and flags live in cmd/postern-relay.
package relay
