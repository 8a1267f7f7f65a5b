package protocol

import (
	"net/http"
	"sort"
)

// Reason is the machine-readable cause of a refusal or failure. It travels
// unchanged through every hop: agent result frame, relay CONNECT answer,
// status API and CLI output. The empty Reason is "unknown" and never means ok.
type Reason string

// The reason codes of the contract. Their meaning, provider_error_code and
// HTTP answer are in the reasons table below and in spec.md.
const (
	ReasonUnknown       Reason = ""
	AgentNeverConnected Reason = "AGENT_NEVER_CONNECTED"
	AgentOffline        Reason = "AGENT_OFFLINE"
	AgentAuthFailed     Reason = "AGENT_AUTH_FAILED"
	ConnectionRevoked   Reason = "CONNECTION_REVOKED"
	AllowlistMissing    Reason = "ALLOWLIST_MISSING"
	TargetBlocked       Reason = "TARGET_BLOCKED"
	BadTarget           Reason = "BAD_TARGET"
	DNSNXDomain         Reason = "DNS_NXDOMAIN"
	DNSServFail         Reason = "DNS_SERVFAIL"
	DNSTimeout          Reason = "DNS_TIMEOUT"
	ConnectRefused      Reason = "CONNECT_REFUSED"
	ConnectTimeout      Reason = "CONNECT_TIMEOUT"
	HostUnreachable     Reason = "HOST_UNREACHABLE"
	TLSFailed           Reason = "TLS_FAILED"
	UpstreamRateLimited Reason = "UPSTREAM_RATE_LIMITED"
	AgentBusy           Reason = "AGENT_BUSY"
	RateLimited         Reason = "RATE_LIMITED"
	RelayUnavailable    Reason = "RELAY_UNAVAILABLE"
	ProxyAuthRequired   Reason = "PROXY_AUTH_REQUIRED"
	APIAuthRequired     Reason = "API_AUTH_REQUIRED"
	UnsupportedOp       Reason = "UNSUPPORTED_OP"
	ProtocolError       Reason = "PROTOCOL_ERROR"
	AgentTokenInvalid   Reason = "AGENT_TOKEN_INVALID"
	AgentTokenRevoked   Reason = "AGENT_TOKEN_REVOKED"
	ConnectionNotFound  Reason = "CONNECTION_NOT_FOUND"
	NotRevoked          Reason = "CONNECTION_NOT_REVOKED"
	APIKeyNotFound      Reason = "API_KEY_NOT_FOUND"
	Forbidden           Reason = "FORBIDDEN"
	InvalidRequest      Reason = "INVALID_REQUEST"
	InternalError       Reason = "INTERNAL_ERROR"
)

// Provider error codes: the coarse class the cloud product branches on.
const (
	ProviderConnectivityBlocked = "PROVIDER_SELF_HOSTED_CONNECTIVITY_BLOCKED"
	ProviderBaseURLBlocked      = "PROVIDER_BASE_URL_BLOCKED"
	ProviderBaseURLUnreachable  = "PROVIDER_BASE_URL_UNREACHABLE"
	ProviderRateLimited         = "PROVIDER_RATE_LIMITED"
)

// ReasonInfo is one row of the reason table.
type ReasonInfo struct {
	Reason Reason
	// ProviderErrorCode is empty where the reason is not the provider
	// path's fault (a missing API key, a malformed API call).
	ProviderErrorCode string
	// HTTPStatus is the CONNECT (and API) answer; 0 where the reason is
	// only reported by checks and never answers a CONNECT.
	HTTPStatus int
	// RetryAfter says whether answers carry a Retry-After.
	RetryAfter bool
	// Summary is a short human meaning.
	Summary string
}

var reasons = map[Reason]ReasonInfo{
	AgentNeverConnected: {AgentNeverConnected, ProviderConnectivityBlocked, http.StatusBadGateway, false, "no agent has ever connected for this connection"},
	AgentOffline:        {AgentOffline, ProviderConnectivityBlocked, http.StatusBadGateway, false, "no agent tunnel is up now"},
	AgentAuthFailed:     {AgentAuthFailed, ProviderConnectivityBlocked, http.StatusBadGateway, false, "an agent is trying to connect with a wrong or expired token"},
	ConnectionRevoked:   {ConnectionRevoked, ProviderConnectivityBlocked, http.StatusForbidden, false, "the connection was revoked"},
	AllowlistMissing:    {AllowlistMissing, ProviderConnectivityBlocked, http.StatusForbidden, false, "no allow rule covers this host and port"},
	TargetBlocked:       {TargetBlocked, ProviderBaseURLBlocked, http.StatusForbidden, false, "a deny rule or an unsafe address blocks this target"},
	BadTarget:           {BadTarget, ProviderBaseURLBlocked, http.StatusBadRequest, false, "malformed host or port"},
	DNSNXDomain:         {DNSNXDomain, ProviderBaseURLUnreachable, http.StatusBadGateway, false, "the customer's DNS says the name does not exist"},
	DNSServFail:         {DNSServFail, ProviderBaseURLUnreachable, http.StatusBadGateway, false, "the customer's DNS failed to answer (SERVFAIL)"},
	DNSTimeout:          {DNSTimeout, ProviderBaseURLUnreachable, http.StatusGatewayTimeout, false, "the customer's DNS did not answer in time"},
	ConnectRefused:      {ConnectRefused, ProviderBaseURLUnreachable, http.StatusBadGateway, false, "the target refused the connection"},
	ConnectTimeout:      {ConnectTimeout, ProviderBaseURLUnreachable, http.StatusGatewayTimeout, false, "the target did not accept the connection in time"},
	HostUnreachable:     {HostUnreachable, ProviderBaseURLUnreachable, http.StatusBadGateway, false, "no route to the target"},
	TLSFailed:           {TLSFailed, ProviderBaseURLUnreachable, 0, false, "the TLS handshake with the target failed"},
	UpstreamRateLimited: {UpstreamRateLimited, ProviderRateLimited, 0, true, "the provider answered 429"},
	AgentBusy:           {AgentBusy, ProviderRateLimited, http.StatusTooManyRequests, true, "the agent's stream limit is reached"},
	RateLimited:         {RateLimited, ProviderRateLimited, http.StatusTooManyRequests, true, "the request rate limit is exceeded"},
	RelayUnavailable:    {RelayUnavailable, ProviderConnectivityBlocked, http.StatusServiceUnavailable, true, "the relay cannot reach the tunnel's node or its store"},
	ProxyAuthRequired:   {ProxyAuthRequired, "", http.StatusProxyAuthRequired, false, "missing or wrong API key"},
	APIAuthRequired:     {APIAuthRequired, "", http.StatusUnauthorized, false, "missing or wrong API key on the admin API"},

	// Reasons outside the CONNECT table: protocol faults between agent
	// and relay, agent-token refusals at /v1/tunnel, and API errors.
	UnsupportedOp:      {UnsupportedOp, "", http.StatusBadGateway, false, "the agent does not support this operation"},
	ProtocolError:      {ProtocolError, ProviderConnectivityBlocked, http.StatusBadGateway, false, "the agent answered with a malformed frame"},
	AgentTokenInvalid:  {AgentTokenInvalid, "", http.StatusUnauthorized, false, "the agent token is unknown or wrong"},
	AgentTokenRevoked:  {AgentTokenRevoked, "", http.StatusUnauthorized, false, "the agent token's connection was revoked"},
	ConnectionNotFound: {ConnectionNotFound, "", http.StatusNotFound, false, "no such connection"},
	NotRevoked:         {NotRevoked, "", http.StatusConflict, false, "the connection must be revoked before it is deleted"},
	APIKeyNotFound:     {APIKeyNotFound, "", http.StatusNotFound, false, "no such API key"},
	Forbidden:          {Forbidden, "", http.StatusForbidden, false, "the API key may not do this"},
	InvalidRequest:     {InvalidRequest, "", http.StatusBadRequest, false, "the request is malformed"},
	InternalError:      {InternalError, "", http.StatusInternalServerError, false, "an internal error occurred"},
}

// Info returns the table row of r. An unknown reason maps to a 502 with no
// provider code, so a newer agent's reason is still passed on.
func (r Reason) Info() ReasonInfo {
	if info, ok := reasons[r]; ok {
		return info
	}
	return ReasonInfo{Reason: r, HTTPStatus: http.StatusBadGateway, Summary: "unrecognized reason"}
}

// Known reports whether r is in the table.
func (r Reason) Known() bool {
	_, ok := reasons[r]
	return ok
}

// VerdictReason is the reason code of an allowlist verdict, named by its
// stable word: the words allowlist.Verdict.String() returns, which the
// status API reports as allowlist_status. "missing" is ALLOWLIST_MISSING,
// "blocked" TARGET_BLOCKED (a deny rule or an unsafe address) and
// "bad_target" BAD_TARGET; any other word, "allowed" among them, carries
// no reason. This is the one place that mapping is written.
func VerdictReason(verdict string) Reason {
	switch verdict {
	case "missing":
		return AllowlistMissing
	case "blocked":
		return TargetBlocked
	case "bad_target":
		return BadTarget
	}
	return ReasonUnknown
}

// Reasons returns every row of the table, for documentation and tests.
func Reasons() []ReasonInfo {
	out := make([]ReasonInfo, 0, len(reasons))
	for _, info := range reasons {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}
