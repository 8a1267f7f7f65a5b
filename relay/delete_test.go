package relay

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// TestDeleteConnection: a connection is deleted only once revoked; then
// every call answers as for a connection that never existed, on the API,
// the proxy (whose cached record is forgotten at once) and the tunnel
// endpoint, and the audit log names the deletion.
func TestDeleteConnection(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	kept := h.createConnection(t, "kept", "acme")
	path := "/v1/connections/" + c.ID

	e := requireRefusal(t, h.call(t, http.MethodDelete, path, h.adminKey, nil), http.StatusConflict, protocol.NotRevoked)
	assert.Equal(t, "revoke the connection first: postern-relay connections revoke "+c.ID, e.Message)
	decode[api.Connection](t, h.call(t, http.MethodGet, path, h.adminKey, nil), http.StatusOK)

	h.revoke(t, c.ID)
	// The proxy reads the revoked record, which it then keeps for a while.
	requireRefusal(t, h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply(),
		http.StatusForbidden, protocol.ConnectionRevoked)

	r := h.call(t, http.MethodDelete, path, h.adminKey, nil)
	require.Equal(t, http.StatusNoContent, r.status, "body: %s", r.body)
	assert.Empty(t, r.body)
	assert.NotEmpty(t, r.header.Get("Postern-Request-Id"))

	for name, tc := range map[string]struct{ method, suffix string }{
		"show":    {http.MethodGet, ""},
		"status":  {http.MethodGet, "/status"},
		"history": {http.MethodGet, "/history"},
		"revoke":  {http.MethodPost, "/revoke"},
		"rotate":  {http.MethodPost, "/tokens"},
		"delete":  {http.MethodDelete, ""},
	} {
		t.Run(name, func(t *testing.T) {
			requireRefusal(t, h.call(t, tc.method, path+tc.suffix, h.adminKey, nil), http.StatusNotFound, protocol.ConnectionNotFound)
		})
	}
	list := decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil), http.StatusOK)
	require.Len(t, list.Connections, 1)
	assert.Equal(t, kept.ID, list.Connections[0].ID)

	t.Run("the proxy answers as for an unknown connection", func(t *testing.T) {
		gone := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil).reply()
		never := h.connect(t, "gitlab.corp.example:443", basicAuth("conn_0000000000000000", h.adminKey), nil).reply()
		requireRefusal(t, gone, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
		assert.Equal(t, withoutRequestID(t, never), withoutRequestID(t, gone))
	})
	t.Run("its agent token is unknown", func(t *testing.T) {
		requireRefusal(t, h.tunnelRequest(t, "Bearer "+c.AgentToken), http.StatusUnauthorized, protocol.AgentTokenInvalid)
	})
	t.Run("the audit log names it", func(t *testing.T) {
		assert.Regexp(t, `msg="connection deleted" node=node-test connection=`+c.ID+` workspace=acme name=gitlab tunnels_closed=0 by_key=`, h.logs.String())
	})
}

// TestDeleteLeavesOtherConnectionsAlone: deleting a connection leaves
// another's tunnels, streams and status as they were.
func TestDeleteLeavesOtherConnectionsAlone(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	live := h.createConnection(t, "live", "")
	h.firstTunnel(t, live, testHello("agent-live", 1), echo)
	h.revoke(t, c.ID)
	r := h.call(t, http.MethodDelete, "/v1/connections/"+c.ID, h.adminKey, nil)
	require.Equal(t, http.StatusNoContent, r.status, "body: %s", r.body)

	_, back := h.connectEcho(t, live.ID, []byte("still here"))
	assert.Equal(t, "still here", string(back))
	assert.Equal(t, "connected", h.status(t, live.ID, "").TunnelStatus)
}
