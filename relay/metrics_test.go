package relay

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// /metrics counts refusals by reason and carried streams and bytes, shows
// the live tunnels, and never carries a connection id or a secret.
func TestMetrics(t *testing.T) {
	h := newHarness(t)
	c := h.createConnection(t, "acme", "acme")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), byHost(map[string]answerFunc{"gitlab.corp.example": echo}))
	defer a.Close()
	h.waitTunnels(t, c.ID, 1)

	ok, _ := h.connectEcho(t, c.ID, []byte("ping"))
	require.NoError(t, ok.Close())
	requireRefusal(t, h.connect(t, "jira.other.example:443", basicAuth(c.ID, h.adminKey), nil).reply(), http.StatusForbidden, protocol.AllowlistMissing)
	requireRefusal(t, h.connect(t, "jira.other.example:443", basicAuth(c.ID, "pak_wrong"), nil).reply(), http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)

	var text string
	require.Eventually(t, func() bool {
		r := h.call(t, http.MethodGet, "/metrics", "", nil)
		text = string(r.body)
		return r.status == http.StatusOK && strings.Contains(text, "postern_relay_proxy_streams_total 1")
	}, waitFor, tick, "the finished stream is counted")
	assert.Contains(t, text, `postern_relay_refusals_total{reason="ALLOWLIST_MISSING"} 1`)
	assert.Contains(t, text, `postern_relay_refusals_total{reason="PROXY_AUTH_REQUIRED"} 1`)
	assert.Contains(t, text, "postern_relay_tunnels 1")
	assert.Contains(t, text, `postern_relay_proxy_bytes_total{direction="to_target"} 4`)
	assert.NotContains(t, text, c.ID, "no connection id in labels")
	secret := strings.SplitN(c.AgentToken, "_", 3)[2] // the secret itself may contain "_"
	assert.NotContains(t, text, secret)
	assert.NotContains(t, text, h.adminKey)
}
