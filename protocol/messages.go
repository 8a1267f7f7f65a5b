package protocol

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Version is the protocol revision carried in Hello; it changes only with
// the subprotocol name.
const Version = 1

// Hello is the agent's first frame on the control stream.
type Hello struct {
	ProtocolVersion int    `json:"protocol_version"`
	AgentID         string `json:"agent_id"`
	// InstanceID names this agent process: it changes at every start and
	// stays the same across the tunnels and reconnects of one process, so
	// the relay can tell a restarted agent from a second process running
	// with the same agent id. Empty from older agents.
	InstanceID string    `json:"instance_id,omitempty"`
	Hostname   string    `json:"hostname"`
	Version    string    `json:"version"`
	Tunnels    int       `json:"tunnels"`
	StartedAt  time.Time `json:"started_at"`
	Allowlist  Allowlist `json:"allowlist"`
	// Probe marks a diagnostic handshake (postern-agent doctor): the
	// relay answers Welcome and ends the tunnel without registering it,
	// so it never changes the connection's status.
	Probe bool `json:"probe,omitempty"`
}

// ProcessKey names the agent process that sent the Hello: its instance
// id, or for older agents, which send none, its start time.
func (h Hello) ProcessKey() string {
	if h.InstanceID != "" {
		return h.InstanceID
	}
	return "started:" + h.StartedAt.UTC().Format(time.RFC3339Nano)
}

// Welcome is the relay's answer to Hello.
type Welcome struct {
	NodeID string `json:"node_id"`
	// HeartbeatMS is how often the agent must send Health, in milliseconds.
	HeartbeatMS int64  `json:"heartbeat_ms"`
	SessionID   string `json:"session_id"`
	// Nodes is how many nodes of the relay's cluster take new tunnels;
	// 0 or 1 for a single node. Agents spread their tunnels by it.
	Nodes int `json:"nodes,omitempty"`
}

// HeartbeatInterval returns the Health period the relay asked for.
func (w Welcome) HeartbeatInterval() time.Duration {
	return time.Duration(w.HeartbeatMS) * time.Millisecond
}

// Health is the agent's periodic report on the control stream.
type Health struct {
	Time          time.Time       `json:"time"`
	TunnelsUp     int             `json:"tunnels_up"`
	ActiveStreams int             `json:"active_streams"`
	BytesIn       uint64          `json:"bytes_in"`
	BytesOut      uint64          `json:"bytes_out"`
	UptimeSeconds int64           `json:"uptime_seconds"`
	Version       string          `json:"version"`
	Allowlist     Allowlist       `json:"allowlist"`
	Errors        map[Reason]int  `json:"errors,omitempty"`
	Resolver      *ResolverHealth `json:"resolver,omitempty"`
}

// ResolverHealth is the agent's DNS health in a Health report.
type ResolverHealth struct {
	// Status is ok | failing (every lookup since the previous report
	// that reached a server ended in SERVFAIL or a timeout).
	Status    string   `json:"status"`
	Servers   []string `json:"servers,omitempty"`
	Lookups   uint64   `json:"lookups"`
	Queries   uint64   `json:"queries"`
	CacheHits uint64   `json:"cache_hits"`
	NXDomain  uint64   `json:"nxdomain"`
	ServFail  uint64   `json:"servfail"`
	Timeouts  uint64   `json:"timeouts"`
	LastError string   `json:"last_error,omitempty"`
}

// Allowlist summarizes the agent's rules so the relay can show them and
// evaluate a base URL against them without a round trip.
type Allowlist struct {
	// Status is configured | empty | invalid.
	Status    string     `json:"status"`
	Mode      string     `json:"mode"`
	Count     int        `json:"count"`
	SHA256    string     `json:"sha256"`
	LoadedAt  time.Time  `json:"loaded_at"`
	LastError string     `json:"last_error,omitempty"`
	Allow     []RuleSpec `json:"allow,omitempty"`
	Deny      []RuleSpec `json:"deny,omitempty"`
	// Blocked are the addresses and prefixes (canonical, as "ip" or
	// "cidr" of a rule) that the agent's config adds to its always-blocked
	// set.
	Blocked []string `json:"blocked,omitempty"`
}

// MaxSummaryRules and MaxSummaryPorts bound one allowlist summary: its
// allow rules, deny rules and blocked entries together, and the port
// entries of its rules together. A relay ends a tunnel whose Hello or
// Health goes beyond them, so an agent refuses such a configuration when
// it loads it.
const (
	MaxSummaryRules = 1024
	MaxSummaryPorts = 4096
)

// RuleSpec is one normalized rule as reported on the wire. Exactly one of
// Host, IP and CIDR is set; Ports holds single ports and "lo-hi" ranges.
type RuleSpec struct {
	Host  string   `json:"host,omitempty"`
	IP    string   `json:"ip,omitempty"`
	CIDR  string   `json:"cidr,omitempty"`
	Ports []string `json:"ports,omitempty"`
}

// GoAway asks the agent to open a replacement tunnel (elsewhere if it can)
// and let this one drain.
type GoAway struct {
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Revoked tells the agent its connection was revoked, or that the agent
// token this tunnel was opened with has ended; the relay closes the tunnel
// right after.
type Revoked struct {
	Message string `json:"message,omitempty"`
	// Reason is what a reconnect with the same token will be answered:
	// AGENT_TOKEN_REVOKED for a revoked connection, AGENT_TOKEN_INVALID
	// for a token that expired or was deleted. Empty from older relays.
	Reason Reason `json:"reason,omitempty"`
}

// Notice tells the agent of a condition of its connection that does not
// end the tunnel: it starts (Cleared false) or ends (Cleared true).
// Agents ignore codes they do not know.
type Notice struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Cleared bool   `json:"cleared,omitempty"`
}

// NoticeDuplicateAgent is the Notice code of an agent id that more than
// one live agent process uses at once.
const NoticeDuplicateAgent = "DUPLICATE_AGENT"

// DuplicateAgentMessage says that the agent processes on hosts (one
// entry per process) use one agent id: the relay's Notice and its status
// warning word it alike.
func DuplicateAgentMessage(agentID string, hosts []string) string {
	hs := make([]string, len(hosts))
	for i, h := range hosts {
		hs[i] = cmp.Or(h, "unknown host")
	}
	slices.Sort(hs)
	return fmt.Sprintf("agent id %q is used by %d agent processes at once (hosts: %s)", agentID, len(hs), strings.Join(hs, ", "))
}

// Op is the operation a relay-opened stream asks for.
type Op string

// Operations.
const (
	OpDial  Op = "dial"
	OpCheck Op = "check"
)

// Request is the first frame on every relay-opened stream.
type Request struct {
	Op   Op     `json:"op"`
	ID   string `json:"id"`
	Host string `json:"host"`
	Port int    `json:"port"`
	// BaseURL is the URL a check probes; empty for dial.
	BaseURL string `json:"base_url,omitempty"`
	// DeadlineUnixMS bounds the whole operation (resolve, connect, check).
	DeadlineUnixMS int64 `json:"deadline_unix_ms"`
}

// Limits on request fields.
const (
	MaxRequestIDLen = 128
	MaxHostLen      = 255
	MaxBaseURLLen   = 2048
)

// ErrBadRequest marks a request frame whose fields are out of bounds.
var ErrBadRequest = errors.New("bad request frame")

// Deadline returns the request's deadline, or the zero time if unset.
func (r Request) Deadline() time.Time {
	if r.DeadlineUnixMS <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(r.DeadlineUnixMS)
}

// Validate checks the bounds every receiver relies on. It does not judge
// the target: that is the allowlist's work.
func (r Request) Validate() error {
	switch {
	case r.Op == "":
		return fmt.Errorf("%w: op missing", ErrBadRequest)
	case len(r.ID) > MaxRequestIDLen:
		return fmt.Errorf("%w: id longer than %d", ErrBadRequest, MaxRequestIDLen)
	case len(r.Host) > MaxHostLen:
		return fmt.Errorf("%w: host longer than %d", ErrBadRequest, MaxHostLen)
	case len(r.BaseURL) > MaxBaseURLLen:
		return fmt.Errorf("%w: base_url longer than %d", ErrBadRequest, MaxBaseURLLen)
	case r.Op == OpDial && r.Host == "":
		return fmt.Errorf("%w: host missing", ErrBadRequest)
	case r.Op == OpDial && (r.Port < 1 || r.Port > 65535):
		return fmt.Errorf("%w: port %d out of range", ErrBadRequest, r.Port)
	}
	return nil
}

// Result answers a Request. After an OK dial, raw bytes follow both ways.
type Result struct {
	OK      bool   `json:"ok"`
	Reason  Reason `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Addr is the address the agent dialled (dial) or would dial.
	Addr string `json:"addr,omitempty"`
	// Rule names the allowlist rule that decided, if any.
	Rule string `json:"rule,omitempty"`
	// RetryAfterSeconds accompanies AGENT_BUSY and UPSTREAM_RATE_LIMITED.
	RetryAfterSeconds int `json:"retry_after,omitempty"`
	// Check carries the steps of a check operation.
	Check *CheckResult `json:"check,omitempty"`
}

// CheckResult is the outcome of a live check run by the agent.
type CheckResult struct {
	Ready             bool        `json:"ready"`
	Reason            Reason      `json:"reason,omitempty"`
	ProviderErrorCode string      `json:"provider_error_code,omitempty"`
	RetryAfterSeconds int         `json:"retry_after,omitempty"`
	Steps             []CheckStep `json:"steps"`
}

// CheckStep is one layer of a live check.
type CheckStep struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	MS     int64  `json:"ms"`
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// ReadRequest reads and validates the request frame that opens a stream.
func ReadRequest(r io.Reader) (Request, error) {
	req, err := readStreamFrame[Request](r, FrameRequest)
	if err != nil {
		return Request{}, err
	}
	return req, req.Validate()
}

// ReadResult reads the result frame that answers a request.
func ReadResult(r io.Reader) (Result, error) {
	return readStreamFrame[Result](r, FrameResult)
}

// readStreamFrame reads one frame of a data stream and decodes it as a
// frame of type t.
func readStreamFrame[T any](r io.Reader, t FrameType) (T, error) {
	var v, zero T
	f, err := ReadFrame(r, MaxStreamFrame)
	if err == nil {
		err = f.Decode(t, &v)
	}
	if err != nil {
		return zero, err
	}
	return v, nil
}
