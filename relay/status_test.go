package relay

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
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
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "disconnected" }, waitFor, tick)
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
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "degraded" }, waitFor, tick)
	// A Health report brings it back.
	a.SendHealth(t, protocol.Health{Time: time.Now(), TunnelsUp: 1, Allowlist: testAllowlist()})
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "connected" }, waitFor, tick)
	// Silent for ten periods: the relay ends the tunnel.
	requireDone(t, a.Session.Done(), "relay kept a silent tunnel")
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "disconnected" }, waitFor, tick)
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
