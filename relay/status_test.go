package relay

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
)

func TestStatusLifecycle(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")

	st := h.status(t, c.ID, "")
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Equal(t, "active", st.AuthStatus)
	assert.Equal(t, "unknown", st.AllowlistStatus)
	assert.Equal(t, protocol.AgentNeverConnected, st.Reason)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, st.ProviderErrorCode)
	assert.Nil(t, st.LastSeenAt)
	assert.NotNil(t, st.Agents)
	assert.Empty(t, st.Agents)
	assert.False(t, st.Ready)
	assert.NotEmpty(t, st.LastError)

	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	st = h.status(t, c.ID, "")
	assert.Equal(t, "connected", st.TunnelStatus)
	assert.True(t, st.Ready)

	a.Close()
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "disconnected" }, waitFor, pollEvery)
	st = h.status(t, c.ID, "")
	assert.Equal(t, "active", st.AuthStatus)
	assert.Equal(t, protocol.AgentOffline, st.Reason)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, st.ProviderErrorCode)
	require.NotNil(t, st.LastSeenAt, "a disconnected connection says when it was last seen")
	assert.WithinDuration(t, time.Now(), *st.LastSeenAt, 10*time.Second)
	assert.Empty(t, st.Agents)
	assert.False(t, st.Ready)

	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	requireRefusal(t, pc.reply(), http.StatusBadGateway, protocol.AgentOffline)
}

func TestStatusDegradedWithFewerTunnelsThanPromised(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	first := h.firstTunnel(t, c, testHello("agent-1", 2), echo)
	st := h.status(t, c.ID, "")
	assert.Equal(t, "degraded", st.TunnelStatus)
	require.Len(t, st.Agents, 1)
	assert.Equal(t, 1, st.Agents[0].Tunnels)

	second := h.connectAgent(t, c.AgentToken, testHello("agent-1", 2), echo)
	h.waitTunnels(t, c.ID, 2)
	st = h.status(t, c.ID, "")
	assert.Equal(t, "connected", st.TunnelStatus)
	require.Len(t, st.Agents, 1, "tunnels of one agent are one entry")
	assert.Equal(t, 2, st.Agents[0].Tunnels)

	second.Close()
	h.waitTunnels(t, c.ID, 1)
	assert.Equal(t, "degraded", h.status(t, c.ID, "").TunnelStatus)
	first.Close()
}

func TestStatusLateHealth(t *testing.T) {
	t.Parallel()
	const beat = 200 * time.Millisecond
	h, c := newConnHarness(t, "", func(c *Config) { c.HeartbeatInterval = beat })
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	// No Health for more than two and a half periods: degraded.
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "degraded" }, waitFor, pollEvery)
	// A Health report brings it back.
	a.SendHealth(t, protocol.Health{Time: time.Now(), TunnelsUp: 1, Allowlist: testAllowlist()})
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "connected" }, waitFor, pollEvery)
	// Silent for ten periods: the relay ends the tunnel.
	requireDone(t, a.Session.Done(), "relay kept a silent tunnel")
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "disconnected" }, waitFor, pollEvery)
}

func TestStatusBaseURL(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	tests := map[string]struct {
		baseURL  string
		verdict  string
		reason   protocol.Reason
		provider string
	}{
		"allowed host":              {"https://gitlab.corp.example", "allowed", "", ""},
		"allowed host with path":    {"https://gitlab.corp.example/api/v4?x=1", "allowed", "", ""},
		"allowed host explicit 443": {"https://GitLab.Corp.Example:443/", "allowed", "", ""},
		"allowed cidr port range":   {"http://10.20.1.5:8050", "allowed", "", ""},
		"host on another port":      {"https://gitlab.corp.example:8443", "missing", protocol.AllowlistMissing, protocol.ProviderConnectivityBlocked},
		"http defaults to port 80":  {"http://gitlab.corp.example", "missing", protocol.AllowlistMissing, protocol.ProviderConnectivityBlocked},
		"host without a rule":       {"https://jira.other.example", "missing", protocol.AllowlistMissing, protocol.ProviderConnectivityBlocked},
		"deny rule":                 {"https://10.20.5.9", "blocked", protocol.TargetBlocked, protocol.ProviderBaseURLBlocked},
		"loopback":                  {"https://127.0.0.1", "blocked", protocol.TargetBlocked, protocol.ProviderBaseURLBlocked},
		"ipv6 loopback":             {"https://[::1]:443", "blocked", protocol.TargetBlocked, protocol.ProviderBaseURLBlocked},
		"cloud metadata":            {"http://169.254.169.254/latest/meta-data", "blocked", protocol.TargetBlocked, protocol.ProviderBaseURLBlocked},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := h.status(t, c.ID, "?base_url="+url.QueryEscape(tc.baseURL))
			assert.Equal(t, "connected", st.TunnelStatus)
			assert.Equal(t, "active", st.AuthStatus)
			assert.Equal(t, tc.verdict, st.AllowlistStatus)
			assert.Equal(t, tc.reason, st.Reason)
			assert.Equal(t, tc.provider, st.ProviderErrorCode)
			assert.Equal(t, tc.verdict == "allowed", st.Ready)
			if tc.verdict != "allowed" {
				assert.NotEmpty(t, st.LastError, "a refusal says why")
			}
		})
	}
	requireNoRequest(t, a, "status asked the agent")
}

func TestStatusBaseURLWithoutTunnel(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	st := h.status(t, c.ID, "?base_url="+url.QueryEscape("https://gitlab.corp.example"))
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Equal(t, "unknown", st.AllowlistStatus)
	assert.Equal(t, protocol.AgentNeverConnected, st.Reason)
	assert.False(t, st.Ready)
}

func TestStatusBadBaseURL(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	tests := map[string]string{
		"other scheme":  "ftp://gitlab.corp.example",
		"no scheme":     "gitlab.corp.example",
		"no host":       "https://",
		"port, no host": "https://:443",
		"port zero":     "https://gitlab.corp.example:0",
		"port too high": "https://gitlab.corp.example:65536",
		"port not int":  "https://gitlab.corp.example:https",
		"bad escape":    "https://gitlab.corp.example/%zz",
		"too long":      "https://gitlab.corp.example/" + strings.Repeat("a", protocol.MaxBaseURLLen),
		"relative":      "/api/v4",
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			r := h.call(t, http.MethodGet, "/v1/connections/"+c.ID+"/status?base_url="+url.QueryEscape(raw), h.adminKey, nil)
			e := requireRefusal(t, r, http.StatusBadRequest, protocol.BadTarget)
			assert.Equal(t, protocol.ProviderBaseURLBlocked, e.ProviderErrorCode)
		})
	}
}

func TestStatusWorkspaceKey(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	key := h.createKey(t, "acme")
	st := decode[struct {
		ConnectionID string `json:"connection_id"`
		TunnelStatus string `json:"tunnel_status"`
	}](t, h.call(t, http.MethodGet, "/v1/connections/"+c.ID+"/status", key, nil), http.StatusOK)
	assert.Equal(t, c.ID, st.ConnectionID)
	assert.Equal(t, "never_connected", st.TunnelStatus)
}

// The relay must judge a base_url by the rules the connection's own agent
// reported, even when another agent reports the same (or no) digest.
func TestStatusBaseURLUsesOwnRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for name, digest := range map[string]string{"same digest": testAllowlist().SHA256, "no digest": ""} {
		t.Run(name, func(t *testing.T) {
			first := h.createConnection(t, "first", "")
			second := h.createConnection(t, "second", "")
			helloA := testHello("agent-a", 1)
			helloA.Allowlist.SHA256 = digest
			helloB := testHello("agent-b", 1)
			helloB.Allowlist.SHA256 = digest
			helloB.Allowlist.Allow = []protocol.RuleSpec{{Host: "jira.corp.example", Ports: []string{"443"}}}
			helloB.Allowlist.Deny = nil
			a := h.connectAgent(t, first.AgentToken, helloA, echo)
			b := h.connectAgent(t, second.AgentToken, helloB, echo)
			h.waitTunnels(t, first.ID, 1)
			h.waitTunnels(t, second.ID, 1)

			q := "?base_url=" + url.QueryEscape("https://gitlab.corp.example")
			assert.Equal(t, "allowed", h.status(t, first.ID, q).AllowlistStatus)
			assert.Equal(t, "missing", h.status(t, second.ID, q).AllowlistStatus)
			q = "?base_url=" + url.QueryEscape("https://jira.corp.example")
			assert.Equal(t, "missing", h.status(t, first.ID, q).AllowlistStatus)
			assert.Equal(t, "allowed", h.status(t, second.ID, q).AllowlistStatus)
			a.Close()
			b.Close()
		})
	}
}

// answerCheck answers a check with outcome.
func answerCheck(outcome protocol.CheckResult) answerFunc {
	return func(_ protocol.Request, st net.Conn) {
		_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true, Addr: "10.20.0.7:443", Check: &outcome})
	}
}

func checkPath(connID string) string { return "/v1/connections/" + connID + "/check" }

func TestCheckPassesAgentOutcomeThrough(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	key := h.createKey(t, "acme")

	limited := protocol.CheckResult{
		Reason: protocol.UpstreamRateLimited, ProviderErrorCode: "SOMETHING_THE_AGENT_MADE_UP", RetryAfterSeconds: 30,
		Steps: []protocol.CheckStep{
			{Step: "allowlist", OK: true, Detail: "allowed by allow host=gitlab.corp.example ports=443"},
			{Step: "dns", OK: true, MS: 3, Detail: "10.20.0.7 (server 10.0.0.2:53, NOERROR)"},
			{Step: "tcp", OK: true, MS: 1, Detail: "connected to 10.20.0.7:443"},
			{Step: "tls", OK: true, MS: 12, Detail: "TLS 1.3, subject CN=gitlab.corp.example, verified"},
			{Step: "http", OK: false, MS: 20, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429 Too Many Requests"},
		},
	}
	ready := protocol.CheckResult{Ready: true, Steps: []protocol.CheckStep{{Step: "allowlist", OK: true}, {Step: "http", OK: true, Detail: "HTTP 401 Unauthorized"}}}
	flood := protocol.CheckResult{Reason: protocol.DNSNXDomain}
	for range 10 {
		flood.Steps = append(flood.Steps, protocol.CheckStep{Step: "dns", Reason: protocol.DNSNXDomain, Detail: strings.Repeat("x", 2000)})
	}
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), byHost(map[string]answerFunc{
		"gitlab.corp.example": answerCheck(limited),
		"jira.corp.example":   answerCheck(ready),
		"flood.corp.example":  answerCheck(flood),
		"old.corp.example":    refuse(protocol.UnsupportedOp, 0),
		"empty.corp.example": func(_ protocol.Request, st net.Conn) {
			_ = protocol.WriteFrame(st, protocol.FrameResult, protocol.Result{OK: true})
		},
	}))
	h.waitTunnels(t, c.ID, 1)

	t.Run("not ready: reason, table provider code and retry_after", func(t *testing.T) {
		before := time.Now()
		r := h.call(t, http.MethodPost, checkPath(c.ID), key, api.CheckRequest{BaseURL: "https://gitlab.corp.example/api/v4"})
		got := decode[api.Check](t, r, http.StatusOK)
		assert.False(t, got.Ready)
		assert.Equal(t, protocol.UpstreamRateLimited, got.Reason)
		assert.Equal(t, protocol.ProviderRateLimited, got.ProviderErrorCode, "the provider code comes from the reason table")
		assert.Equal(t, 30, got.RetryAfter)
		require.Len(t, got.Steps, 5)
		assert.Equal(t, api.CheckStep{Step: "dns", OK: true, MS: 3, Detail: "10.20.0.7 (server 10.0.0.2:53, NOERROR)"}, got.Steps[1])
		assert.Equal(t, api.CheckStep{Step: "http", MS: 20, Reason: protocol.UpstreamRateLimited, Detail: "HTTP 429 Too Many Requests"}, got.Steps[4])

		req := a.NextRequest(t)
		assert.Equal(t, protocol.OpCheck, req.Op)
		assert.Equal(t, "gitlab.corp.example", req.Host)
		assert.Equal(t, 443, req.Port, "the port defaults by scheme")
		assert.Equal(t, "https://gitlab.corp.example/api/v4", req.BaseURL)
		assert.Equal(t, r.header.Get("Postern-Request-Id"), req.ID)
		assert.WithinRange(t, req.Deadline(), before.Add(admin.CheckTimeout-time.Second), time.Now().Add(admin.CheckTimeout+time.Second))
	})
	t.Run("ready", func(t *testing.T) {
		got := decode[api.Check](t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "http://jira.corp.example:8080"}), http.StatusOK)
		assert.True(t, got.Ready)
		assert.Empty(t, got.Reason)
		assert.Empty(t, got.ProviderErrorCode)
		assert.Len(t, got.Steps, 2)
		assert.Equal(t, 8080, a.NextRequest(t).Port)
	})
	t.Run("body is bounded", func(t *testing.T) {
		got := decode[api.Check](t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://flood.corp.example"}), http.StatusOK)
		assert.Len(t, got.Steps, admin.MaxCheckSteps)
		assert.Len(t, got.Steps[0].Detail, admin.MaxCheckDetail)
		assert.Equal(t, protocol.ProviderBaseURLUnreachable, got.ProviderErrorCode)
		a.NextRequest(t)
	})
	t.Run("agent without the operation", func(t *testing.T) {
		e := requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://old.corp.example"}), http.StatusBadGateway, protocol.UnsupportedOp)
		assert.Contains(t, e.Message, "does not support live checks")
		a.NextRequest(t)
	})
	t.Run("agent answers ok without outcome", func(t *testing.T) {
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://empty.corp.example"}), http.StatusBadGateway, protocol.ProtocolError)
		a.NextRequest(t)
	})
	t.Run("agent refusal passes through", func(t *testing.T) {
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), key,
			api.CheckRequest{BaseURL: "https://unknown.corp.example"}), http.StatusForbidden, protocol.AllowlistMissing)
		a.NextRequest(t)
	})
	h.waitReleased(t, c.ID)
}

func TestCheckRefusals(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	own := h.createKey(t, "acme")
	other := h.createKey(t, "globex")
	good := api.CheckRequest{BaseURL: "https://gitlab.corp.example"}

	tests := map[string]struct {
		connID string
		key    string
		body   any
		status int
		reason protocol.Reason
	}{
		"never connected":            {connID: c.ID, key: own, body: good, status: 502, reason: protocol.AgentNeverConnected},
		"admin key, never connected": {connID: c.ID, key: h.adminKey, body: good, status: 502, reason: protocol.AgentNeverConnected},
		"other workspace":            {connID: c.ID, key: other, body: good, status: 404, reason: protocol.ConnectionNotFound},
		"unknown connection":         {connID: "conn_nope", key: own, body: good, status: 404, reason: protocol.ConnectionNotFound},
		"no key":                     {connID: c.ID, body: good, status: 401, reason: protocol.APIAuthRequired},
		"no body":                    {connID: c.ID, key: own, status: 400, reason: protocol.InvalidRequest},
		"unknown field":              {connID: c.ID, key: own, body: `{"base_url":"https://x","follow":true}`, status: 400, reason: protocol.InvalidRequest},
		"empty base_url":             {connID: c.ID, key: own, body: api.CheckRequest{}, status: 400, reason: protocol.BadTarget},
		"ftp":                        {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "ftp://gitlab.corp.example"}, status: 400, reason: protocol.BadTarget},
		"no host":                    {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "https:///path"}, status: 400, reason: protocol.BadTarget},
		"bad port":                   {connID: c.ID, key: own, body: api.CheckRequest{BaseURL: "https://gitlab.corp.example:0"}, status: 400, reason: protocol.BadTarget},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			requireRefusal(t, h.call(t, http.MethodPost, checkPath(tc.connID), tc.key, tc.body), tc.status, tc.reason)
		})
	}

	t.Run("revoked", func(t *testing.T) {
		a := h.firstTunnel(t, c, testHello("agent-1", 1), answerCheck(protocol.CheckResult{Ready: true}))
		h.revoke(t, c.ID)
		requireRefusal(t, h.call(t, http.MethodPost, checkPath(c.ID), own, good), http.StatusForbidden, protocol.ConnectionRevoked)
		requireNoRequest(t, a, "a revoked connection's agent got a request")
	})
}

func TestCheckAgentThatNeverAnswers(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	gone := make(chan struct{})
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), func(_ protocol.Request, st net.Conn) {
		defer close(gone)
		_, _ = st.Read(make([]byte, 1)) // until the relay gives up
	})
	h.waitTunnels(t, c.ID, 1)

	// The API caller's own deadline ends the wait, and the stream with it.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.ep.apiURL+checkPath(c.ID),
		strings.NewReader(`{"base_url":"https://gitlab.corp.example"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+h.adminKey)
	_, err = h.ep.client.Do(req)
	require.Error(t, err)
	requireDone(t, gone, "the relay kept the check stream open after its caller left")
	h.waitReleased(t, c.ID)
}
