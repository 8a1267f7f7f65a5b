// Package api holds the JSON bodies of the relay's HTTP API, shared by the
// relay's handlers and by the Go client the CLI uses, so the two cannot
// drift apart.
package api

import (
	"time"

	"github.com/postern/postern/protocol"
)

// CreateConnectionRequest is the body of POST /v1/connections.
type CreateConnectionRequest struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace,omitempty"`
}

// Connection is a connection as the API shows it.
type Connection struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Workspace string     `json:"workspace"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// AgentToken is present only in the answers that create or rotate it.
	AgentToken string `json:"agent_token,omitempty"`
	// Warnings, only in the answer that creates the connection, are for
	// people: what did not stop the creation but deserves a look, such
	// as another active connection of the workspace with the same name.
	Warnings []string `json:"warnings,omitempty"`
}

// ConnectionList is the body of GET /v1/connections.
type ConnectionList struct {
	Connections []Connection `json:"connections"`
}

// TokenResponse is the body of POST /v1/connections/{id}/tokens.
type TokenResponse struct {
	AgentToken string `json:"agent_token"`
	// PreviousValidUntil is when the tokens issued before this one stop
	// being accepted (the rotation overlap).
	PreviousValidUntil time.Time `json:"previous_valid_until"`
}

// CreateAPIKeyRequest is the body of POST /v1/api-keys.
type CreateAPIKeyRequest struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace,omitempty"`
	Admin     bool   `json:"admin,omitempty"`
	// ExpiresAt, when set, is when the key stops working; it must be in
	// the future. Absent means the key works until it is revoked.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// APIKey is an API key as the API shows it: the answer to POST
// /v1/api-keys, where Key is shown this one time, and an entry of GET
// /v1/api-keys, which never carries the key or its hash.
type APIKey struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Workspace string     `json:"workspace,omitempty"`
	Admin     bool       `json:"admin"`
	Key       string     `json:"key,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// LastUsedAt is when the key was last accepted, to within a minute;
	// absent when it never was.
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// APIKeyList is the body of GET /v1/api-keys.
type APIKeyList struct {
	APIKeys []APIKey `json:"api_keys"`
}

// Status is the body of GET /v1/connections/{id}/status.
type Status struct {
	ConnectionID      string          `json:"connection_id"`
	Ready             bool            `json:"ready"`
	TunnelStatus      string          `json:"tunnel_status"`
	AuthStatus        string          `json:"auth_status"`
	AllowlistStatus   string          `json:"allowlist_status"`
	Reason            protocol.Reason `json:"reason,omitempty"`
	ProviderErrorCode string          `json:"provider_error_code,omitempty"`
	RetryAfter        int             `json:"retry_after,omitempty"`
	LastSeenAt        *time.Time      `json:"last_seen_at,omitempty"`
	Agents            []Agent         `json:"agents"`
	LastError         string          `json:"last_error,omitempty"`
	// Warnings are conditions worth an admin's eye that do not change
	// the reason, such as FLAPPING.
	Warnings []Warning `json:"warnings,omitempty"`
}

// Warning is one condition of a connection worth an admin's eye.
type Warning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Warning codes.
const (
	// WarningFlapping is the warning of a tunnel_status of "flapping".
	WarningFlapping = "FLAPPING"
	// WarningDuplicateAgent: more than one live agent process uses one
	// agent id (a second `postern-agent run` with the same config, or a
	// cloned machine). Both serve; the status lists each process.
	WarningDuplicateAgent = "DUPLICATE_AGENT"
)

// Agent is one connected agent replica as the status shows it.
type Agent struct {
	AgentID string `json:"agent_id"`
	// InstanceID names the agent process; two entries with one agent id
	// and different instance ids are a DUPLICATE_AGENT.
	InstanceID      string             `json:"instance_id,omitempty"`
	Hostname        string             `json:"hostname"`
	Version         string             `json:"version"`
	RelayNode       string             `json:"relay_node"`
	ConnectedAt     time.Time          `json:"connected_at"`
	LastHeartbeatAt time.Time          `json:"last_heartbeat_at"`
	Tunnels         int                `json:"tunnels"`
	ActiveStreams   int                `json:"active_streams"`
	Allowlist       protocol.Allowlist `json:"allowlist"`
	// From the newest Health: uptime, DNS health, and streams refused or
	// failed in the last period, by reason.
	UptimeSeconds int64                    `json:"uptime_seconds"`
	Resolver      *protocol.ResolverHealth `json:"resolver,omitempty"`
	Errors        map[protocol.Reason]int  `json:"errors,omitempty"`
	// Sessions are the agent's tunnels, each with the relay node it is
	// connected to.
	Sessions []Tunnel `json:"sessions"`
}

// Tunnel is one tunnel of an agent: on which relay node it lives and how
// it does.
type Tunnel struct {
	SessionID       string    `json:"session_id"`
	RelayNode       string    `json:"relay_node"`
	ConnectedAt     time.Time `json:"connected_at"`
	LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
	ActiveStreams   int       `json:"active_streams"`
	// Draining is set once the node told the agent to move.
	Draining bool `json:"draining,omitempty"`
}

// Error is the body of every API error and every refused CONNECT: the
// one reason error of every hop.
type Error = protocol.Error

// Event types of GET /v1/events and of webhooks. Tunnel, auth and
// allowlist events are status transitions; reset and overflow are stream
// notices that carry no transition.
const (
	EventTunnel    = "tunnel"
	EventAuth      = "auth"
	EventAllowlist = "allowlist"
	// EventWarning announces a warning of the status: To is its code when
	// it starts, From when it ends (DUPLICATE_AGENT).
	EventWarning = "warning"
	// EventReset means the events after the client's Last-Event-ID are no
	// longer kept: re-read every connection's status, then carry on.
	EventReset = "reset"
	// EventOverflow means the relay dropped this stream because the client
	// read too slowly; reconnect with the last id to get what was missed.
	EventOverflow = "overflow"
)

// Event is one change of a connection's tunnel_status, auth_status or
// allowlist_status, as GET /v1/events streams it and webhooks post it.
// From and To are values of the matching Status field; Reason and
// ProviderErrorCode are the status's after the change.
type Event struct {
	// ID increases with every event of a relay node, also across restarts.
	ID                string          `json:"id"`
	Type              string          `json:"type"`
	ConnectionID      string          `json:"connection_id,omitempty"`
	Workspace         string          `json:"workspace,omitempty"`
	Time              time.Time       `json:"time"`
	From              string          `json:"from,omitempty"`
	To                string          `json:"to,omitempty"`
	Reason            protocol.Reason `json:"reason,omitempty"`
	ProviderErrorCode string          `json:"provider_error_code,omitempty"`
	// Node is the relay node that published the event.
	Node string `json:"node,omitempty"`
	// Suppressed marks a tunnel transition recorded in the history while
	// the connection was flapping: it is never streamed or posted, the
	// one event into "flapping" stands for all of them.
	Suppressed bool `json:"suppressed,omitempty"`
}

// Node is one relay node, as GET /v1/nodes lists it.
type Node struct {
	ID string `json:"id"`
	// PeerURL is where the other nodes reach it; empty on a single node.
	PeerURL  string `json:"peer_url,omitempty"`
	Draining bool   `json:"draining"`
	// Sessions counts its agent tunnels.
	Sessions  int       `json:"sessions"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// RenewedAt is the last renewal of its lease in the shared store.
	RenewedAt  time.Time `json:"renewed_at,omitzero"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Self marks the node that answered.
	Self bool `json:"self,omitempty"`
}

// NodeList is the body of GET /v1/nodes.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// RotateTokenRequest is the optional body of POST /v1/connections/{id}/tokens.
type RotateTokenRequest struct {
	// ExpirePrevious ends the previous tokens now, and the tunnels they
	// opened, instead of after the overlap.
	ExpirePrevious bool `json:"expire_previous,omitempty"`
}
