package relay

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

func TestCreateConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	t.Run("workspace defaults to default and the token is shown once", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		r := h.call(t, http.MethodPost, "/v1/connections", h.adminKey, `{"name":"GitLab prod"}`)
		c := decode[api.Connection](t, r, http.StatusCreated)
		h.remember(c.AgentToken)
		assert.NotEmpty(t, c.ID)
		assert.Equal(t, "GitLab prod", c.Name)
		assert.Equal(t, "default", c.Workspace)
		assert.True(t, strings.HasPrefix(c.AgentToken, "pat_"), c.AgentToken)
		assert.True(t, c.CreatedAt.After(before))
		assert.Nil(t, c.RevokedAt)

		shown := h.call(t, http.MethodGet, "/v1/connections/"+c.ID, h.adminKey, nil)
		got := decode[api.Connection](t, shown, http.StatusOK)
		assert.Empty(t, got.AgentToken)
		assert.NotContains(t, string(shown.body), "agent_token")
		listed := h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil)
		require.Equal(t, http.StatusOK, listed.status)
		assert.NotContains(t, string(listed.body), "agent_token")
		assert.NotContains(t, string(listed.body), secretPart(c.AgentToken))
	})

	t.Run("explicit workspace is kept", func(t *testing.T) {
		c := h.createConnection(t, "jira", "acme-1")
		assert.Equal(t, "acme-1", c.Workspace)
	})

	tests := map[string]string{
		"empty body":             ``,
		"not json":               `name=x`,
		"unknown field":          `{"name":"x","workspace":"a","owner":"me"}`,
		"missing name":           `{"workspace":"acme"}`,
		"empty name":             `{"name":""}`,
		"name with newline":      `{"name":"a\nb"}`,
		"name with DEL":          `{"name":"a\u007fb"}`,
		"name of 129 characters": `{"name":"` + strings.Repeat("n", 129) + `"}`,
		"upper case workspace":   `{"name":"x","workspace":"Acme"}`,
		"workspace with space":   `{"name":"x","workspace":"ac me"}`,
		"workspace with slash":   `{"name":"x","workspace":"a/b"}`,
		"workspace leading dash": `{"name":"x","workspace":"-acme"}`,
		"workspace of 64 chars":  `{"name":"x","workspace":"` + strings.Repeat("w", 64) + `"}`,
		"name of wrong type":     `{"name":7}`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			r := h.call(t, http.MethodPost, "/v1/connections", h.adminKey, body)
			requireRefusal(t, r, http.StatusBadRequest, protocol.InvalidRequest)
		})
	}

	t.Run("longest valid name and workspace are accepted", func(t *testing.T) {
		c := h.createConnection(t, strings.Repeat("n", 128), strings.Repeat("w", 63))
		assert.Len(t, c.Workspace, 63)
	})
}

// TestCreateConnectionWarnsOfSameName: a name another active connection
// of the workspace has is accepted with a warning naming it; other
// workspaces, other names and revoked connections warn of nothing.
func TestCreateConnectionWarnsOfSameName(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	create := func(name, workspace string) api.Connection {
		t.Helper()
		r := h.call(t, http.MethodPost, "/v1/connections", h.adminKey, api.CreateConnectionRequest{Name: name, Workspace: workspace})
		c := decode[api.Connection](t, r, http.StatusCreated)
		h.remember(c.AgentToken)
		if c.Warnings == nil {
			assert.NotContains(t, string(r.body), "warnings", "no warnings, no field")
		}
		return c
	}
	first := create("GitLab prod", "acme")
	assert.Nil(t, first.Warnings)
	second := create("GitLab prod", "acme")
	assert.Equal(t, []string{`a connection named "GitLab prod" already exists in workspace acme (id ` + first.ID +
		`); names are labels, the id is what the product uses`}, second.Warnings)
	assert.NotEqual(t, first.ID, second.ID)
	third := create("GitLab prod", "acme")
	assert.Equal(t, []string{`2 connections named "GitLab prod" already exist in workspace acme (ids ` + first.ID + ", " + second.ID +
		`); names are labels, the id is what the product uses`}, third.Warnings)

	assert.Nil(t, create("GitLab prod", "beta").Warnings, "another workspace")
	assert.Nil(t, create("gitlab prod", "acme").Warnings, "names compare exactly")
	for _, c := range []api.Connection{first, second, third} {
		h.revoke(t, c.ID)
	}
	assert.Nil(t, create("GitLab prod", "acme").Warnings, "revoked connections are not in the way")
	shown := h.call(t, http.MethodGet, "/v1/connections/"+second.ID, h.adminKey, nil)
	assert.NotContains(t, string(shown.body), "warnings", "only the creating answer warns")
}

func TestListConnections(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a1 := h.createConnection(t, "a1", "acme")
	b1 := h.createConnection(t, "b1", "beta")
	a2 := h.createConnection(t, "a2", "acme")
	acmeKey := h.createKey(t, "acme")
	emptyKey := h.createKey(t, "nobody")

	ids := func(t *testing.T, key, query string) []string {
		t.Helper()
		l := decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections"+query, key, nil), http.StatusOK)
		out := []string{}
		for _, c := range l.Connections {
			assert.Empty(t, c.AgentToken)
			out = append(out, c.ID)
		}
		return out
	}
	tests := map[string]struct {
		key   string
		query string
		want  []string
	}{
		"admin sees every workspace":             {h.adminKey, "", []string{a1.ID, b1.ID, a2.ID}},
		"admin may filter by workspace":          {h.adminKey, "?workspace=beta", []string{b1.ID}},
		"workspace key sees its own":             {acmeKey, "", []string{a1.ID, a2.ID}},
		"workspace key cannot widen with filter": {acmeKey, "?workspace=beta", []string{a1.ID, a2.ID}},
		"empty workspace lists nothing":          {emptyKey, "", []string{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, ids(t, tc.key, tc.query))
		})
	}
	t.Run("empty list is an empty array, not null", func(t *testing.T) {
		r := h.call(t, http.MethodGet, "/v1/connections", emptyKey, nil)
		assert.JSONEq(t, `{"connections":[]}`, string(r.body))
	})
}

func TestShowConnection(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	acmeKey := h.createKey(t, "acme")
	for name, key := range map[string]string{"admin": h.adminKey, "own workspace key": acmeKey} {
		t.Run(name, func(t *testing.T) {
			got := decode[api.Connection](t, h.call(t, http.MethodGet, "/v1/connections/"+c.ID, key, nil), http.StatusOK)
			assert.Equal(t, c.ID, got.ID)
			assert.Equal(t, "gitlab", got.Name)
			assert.Equal(t, "acme", got.Workspace)
			assert.True(t, c.CreatedAt.Equal(got.CreatedAt))
			assert.Nil(t, got.RevokedAt)
		})
	}
}

func TestRevokeIsIdempotent(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")

	first := h.revoke(t, c.ID)
	require.NotNil(t, first.RevokedAt)
	second := h.revoke(t, c.ID)
	require.NotNil(t, second.RevokedAt)
	assert.True(t, first.RevokedAt.Equal(*second.RevokedAt), "a second revoke must not move revoked_at")

	shown := decode[api.Connection](t, h.call(t, http.MethodGet, "/v1/connections/"+c.ID, h.adminKey, nil), http.StatusOK)
	require.NotNil(t, shown.RevokedAt)

	r := h.call(t, http.MethodPost, "/v1/connections/"+c.ID+"/tokens", h.adminKey, nil)
	requireRefusal(t, r, http.StatusForbidden, protocol.ConnectionRevoked)

	assertBlocked(t, h.status(t, c.ID, ""), "revoked", "revoked", protocol.ConnectionRevoked)
}

// assertBlocked checks the status of a connection that cannot carry
// traffic: its tunnel and auth statuses, the reason, the provider code
// that blocks connectivity, and not ready.
func assertBlocked(t *testing.T, st api.Status, tunnel, auth string, reason protocol.Reason) {
	t.Helper()
	assert.Equal(t, tunnel, st.TunnelStatus)
	assert.Equal(t, auth, st.AuthStatus)
	assert.Equal(t, reason, st.Reason)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, st.ProviderErrorCode)
	assert.False(t, st.Ready)
}

func TestRotateToken(t *testing.T) {
	t.Parallel()

	t.Run("old and new tokens both work during the overlap", func(t *testing.T) {
		t.Parallel()
		h, c := newConnHarness(t, "")
		before := time.Now()
		tok := h.rotate(t, c.ID)
		require.NotEqual(t, c.AgentToken, tok.AgentToken)
		assert.WithinDuration(t, before.Add(DefaultConfig().TokenOverlap), tok.PreviousValidUntil, time.Minute)

		for name, token := range map[string]string{"old": c.AgentToken, "new": tok.AgentToken} {
			a := h.connectAgent(t, token, testHello("agent-"+name, 1), echo)
			assert.Equal(t, "node-test", a.Welcome.NodeID, name)
			a.Close()
		}
	})

	t.Run("old token is refused once the overlap ends", func(t *testing.T) {
		t.Parallel()
		h, c := newConnHarness(t, "", func(c *Config) { c.TokenOverlap = time.Millisecond })
		tok := h.rotate(t, c.ID)

		require.Eventually(t, func() bool { return time.Now().After(tok.PreviousValidUntil) }, waitFor, time.Millisecond)
		for range 2 { // an agent still on the old token retries
			r := h.tunnelRequest(t, "Bearer "+c.AgentToken)
			requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenInvalid)
		}

		a := h.connectAgent(t, tok.AgentToken, testHello("agent-new", 1), echo)
		h.waitTunnels(t, c.ID, 1)
		a.Close()

		// The expired token is recorded against the connection.
		h.waitTunnels(t, c.ID, 0)
		st := h.status(t, c.ID, "")
		assert.Equal(t, "failing", st.AuthStatus)
		assert.Equal(t, protocol.AgentAuthFailed, st.Reason)
		assert.Contains(t, st.LastError, "expired")
	})
}

func TestCreateAPIKey(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")

	t.Run("workspace key works for its workspace only", func(t *testing.T) {
		r := h.call(t, http.MethodPost, "/v1/api-keys", h.adminKey, `{"name":"ci","workspace":"acme"}`)
		k := decode[api.APIKey](t, r, http.StatusCreated)
		h.remember(k.Key)
		assert.NotEmpty(t, k.ID)
		assert.Equal(t, "ci", k.Name)
		assert.Equal(t, "acme", k.Workspace)
		assert.False(t, k.Admin)
		assert.True(t, strings.HasPrefix(k.Key, "pak_"+k.ID+"_"), "key %q names its id", k.ID)

		got := decode[api.Connection](t, h.call(t, http.MethodGet, "/v1/connections/"+c.ID, k.Key, nil), http.StatusOK)
		assert.Equal(t, c.ID, got.ID)
	})

	t.Run("admin key can do admin things", func(t *testing.T) {
		r := h.call(t, http.MethodPost, "/v1/api-keys", h.adminKey, `{"name":"ops","admin":true}`)
		k := decode[api.APIKey](t, r, http.StatusCreated)
		h.remember(k.Key)
		assert.True(t, k.Admin)
		assert.Empty(t, k.Workspace)
		decode[api.Connection](t, h.call(t, http.MethodPost, "/v1/connections", k.Key, `{"name":"by ops"}`), http.StatusCreated)
	})

	invalid := map[string]string{
		"both workspace and admin": `{"name":"x","workspace":"acme","admin":true}`,
		"neither":                  `{"name":"x"}`,
		"admin false alone":        `{"name":"x","admin":false}`,
		"bad workspace":            `{"name":"x","workspace":"ACME"}`,
		"no name":                  `{"workspace":"acme"}`,
		"unknown field":            `{"name":"x","workspace":"acme","scopes":["all"]}`,
		"array body":               `[]`,
	}
	for name, body := range invalid {
		t.Run(name, func(t *testing.T) {
			requireRefusal(t, h.call(t, http.MethodPost, "/v1/api-keys", h.adminKey, body), http.StatusBadRequest, protocol.InvalidRequest)
		})
	}
}

func TestWorkspaceKeyCannotDoAdminThings(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	own := h.createConnection(t, "own", "acme")
	key := h.createKey(t, "acme")

	tests := map[string]struct {
		method, path, body string
	}{
		"create connection": {http.MethodPost, "/v1/connections", `{"name":"x","workspace":"acme"}`},
		"create api key":    {http.MethodPost, "/v1/api-keys", `{"name":"x","workspace":"acme"}`},
		"create admin key":  {http.MethodPost, "/v1/api-keys", `{"name":"x","admin":true}`},
		"revoke":            {http.MethodPost, "/v1/connections/" + own.ID + "/revoke", ""},
		"rotate token":      {http.MethodPost, "/v1/connections/" + own.ID + "/tokens", ""},
		"delete":            {http.MethodDelete, "/v1/connections/" + own.ID, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			requireRefusal(t, h.call(t, tc.method, tc.path, key, body), http.StatusForbidden, protocol.Forbidden)
		})
	}
	t.Run("nothing changed", func(t *testing.T) {
		got := decode[api.Connection](t, h.call(t, http.MethodGet, "/v1/connections/"+own.ID, key, nil), http.StatusOK)
		assert.Nil(t, got.RevokedAt)
		l := decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil), http.StatusOK)
		assert.Len(t, l.Connections, 1)
	})
}

func TestOtherWorkspaceLooksMissing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	theirs := h.createConnection(t, "theirs", "beta")
	key := h.createKey(t, "acme")
	const missing = "conn_0000000000000000"

	// The message may echo the id the caller sent; beyond that, nothing
	// may tell an existing connection of another workspace from none.
	normalized := func(t *testing.T, r answer, id string) api.Error {
		e := withoutRequestID(t, r)
		e.Message = strings.ReplaceAll(e.Message, id, "{id}")
		return e
	}
	tests := map[string]struct {
		method, suffix string
	}{
		"show":   {http.MethodGet, ""},
		"status": {http.MethodGet, "/status"},
		"revoke": {http.MethodPost, "/revoke"},
		"rotate": {http.MethodPost, "/tokens"},
		"delete": {http.MethodDelete, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			other := h.call(t, tc.method, "/v1/connections/"+theirs.ID+tc.suffix, key, nil)
			none := h.call(t, tc.method, "/v1/connections/"+missing+tc.suffix, key, nil)
			requireRefusal(t, other, http.StatusNotFound, protocol.ConnectionNotFound)
			requireRefusal(t, none, http.StatusNotFound, protocol.ConnectionNotFound)
			assert.Equal(t, normalized(t, none, missing), normalized(t, other, theirs.ID))
			assert.Equal(t, none.header.Get("Postern-Reason"), other.header.Get("Postern-Reason"))
		})
	}
	t.Run("their connection is untouched", func(t *testing.T) {
		got := decode[api.Connection](t, h.call(t, http.MethodGet, "/v1/connections/"+theirs.ID, h.adminKey, nil), http.StatusOK)
		assert.Nil(t, got.RevokedAt)
	})
}

func TestAPIKeyRequired(t *testing.T) {
	t.Parallel()
	// Far more refusals than one source may earn; abuse_test.go covers
	// the limit itself.
	h, c := newConnHarness(t, "", withoutAuthLimits)
	// A well-formed key whose id was never stored.
	unknownKey := "pak_" + strings.Repeat("a", 16) + h.adminKey[len("pak_")+16:]

	auths := map[string]string{
		"no header":             "",
		"basic scheme":          "Basic " + h.adminKey,
		"bearer without key":    "Bearer ",
		"malformed key":         "Bearer pak_short",
		"agent token as key":    "Bearer " + c.AgentToken,
		"unknown key id":        "Bearer " + unknownKey,
		"wrong secret":          "Bearer " + h.adminKey[:len(h.adminKey)-4] + "AAAA",
		"lower-case bearer":     "bearer " + h.adminKey,
		"key with extra suffix": "Bearer " + h.adminKey + "x",
	}
	paths := map[string]struct{ method, path string }{
		"list":     {http.MethodGet, "/v1/connections"},
		"show":     {http.MethodGet, "/v1/connections/" + c.ID},
		"status":   {http.MethodGet, "/v1/connections/" + c.ID + "/status"},
		"create":   {http.MethodPost, "/v1/connections"},
		"api keys": {http.MethodPost, "/v1/api-keys"},
	}
	for name, auth := range auths {
		for pname, p := range paths {
			t.Run(name+"/"+pname, func(t *testing.T) {
				req, err := http.NewRequestWithContext(t.Context(), p.method, h.ep.apiURL+p.path, strings.NewReader(`{"name":"x","admin":true}`))
				require.NoError(t, err)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				r := do(t, h.ep.client, req)
				requireRefusal(t, r, http.StatusUnauthorized, protocol.APIAuthRequired)
			})
		}
	}
	l := decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil), http.StatusOK)
	assert.Len(t, l.Connections, 1, "no refused create may have created anything")
}

func TestBadKeysGetOneAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	unknown := "pak_" + strings.Repeat("b", 16) + h.adminKey[len("pak_")+16:]
	bodies := map[string]api.Error{}
	for name, key := range map[string]string{
		"malformed":    "nonsense",
		"unknown id":   unknown,
		"wrong secret": h.adminKey[:len(h.adminKey)-4] + "AAAA",
	} {
		r := h.call(t, http.MethodGet, "/v1/connections", key, nil)
		requireRefusal(t, r, http.StatusUnauthorized, protocol.APIAuthRequired)
		bodies[name] = withoutRequestID(t, r)
	}
	assert.Equal(t, bodies["malformed"], bodies["unknown id"])
	assert.Equal(t, bodies["malformed"], bodies["wrong secret"])
}

func TestErrorBodiesAreJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.call(t, http.MethodPost, "/v1/connections", h.adminKey, `{"name":`)
	e := requireRefusal(t, r, http.StatusBadRequest, protocol.InvalidRequest)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(r.body, &raw))
	for _, field := range []string{"reason", "message", "request_id"} {
		assert.Contains(t, raw, field)
	}
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	assert.Len(t, e.RequestID, 16)

	other := h.call(t, http.MethodPost, "/v1/connections", h.adminKey, `{"name":`)
	assert.NotEqual(t, e.RequestID, other.header.Get("Postern-Request-Id"), "request ids are unique")
}

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.Version = "9.9.9" })
	health := decode[map[string]string](t, h.call(t, http.MethodGet, "/healthz", "", nil), http.StatusOK)
	assert.Equal(t, map[string]string{"status": "ok", "node_id": "node-test", "version": "9.9.9"}, health)
	ready := decode[map[string]string](t, h.call(t, http.MethodGet, "/readyz", "", nil), http.StatusOK)
	assert.Equal(t, "ready", ready["status"])

	require.NoError(t, h.srv.store.Close())
	r := h.call(t, http.MethodGet, "/readyz", "", nil)
	requireRefusal(t, r, http.StatusServiceUnavailable, protocol.RelayUnavailable)
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	r = h.call(t, http.MethodGet, "/v1/connections", h.adminKey, nil)
	requireRefusal(t, r, http.StatusServiceUnavailable, protocol.RelayUnavailable)
}

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
	// A client's first request without credentials is a challenge, not a
	// refusal; a wrong key on the API and a malformed CONNECT line are
	// refusals of their own reasons.
	requireRefusal(t, h.connect(t, "gitlab.corp.example:443", "", nil).reply(), http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	requireRefusal(t, h.connect(t, "user@gitlab.corp.example:443", "", nil).reply(), http.StatusBadRequest, protocol.BadTarget)
	requireRefusal(t, h.call(t, http.MethodGet, "/v1/connections", "pak_wrong", nil), http.StatusUnauthorized, protocol.APIAuthRequired)

	var text string
	require.Eventually(t, func() bool {
		r := h.call(t, http.MethodGet, "/metrics", "", nil)
		text = string(r.body)
		return r.status == http.StatusOK && strings.Contains(text, "postern_relay_proxy_streams_total 1") &&
			strings.Contains(text, `postern_relay_proxy_bytes_total{direction="to_target"} 4`)
	}, waitFor, pollEvery, "the finished stream and its bytes are counted (bytes when its splice ends)")
	assert.Contains(t, text, `postern_relay_refusals_total{reason="ALLOWLIST_MISSING"} 1`)
	assert.Contains(t, text, `postern_relay_refusals_total{reason="PROXY_AUTH_REQUIRED"} 1`)
	assert.Contains(t, text, "postern_relay_proxy_auth_challenges_total 1")
	assert.Contains(t, text, `postern_relay_refusals_total{reason="BAD_TARGET"} 1`)
	assert.Contains(t, text, `postern_relay_refusals_total{reason="API_AUTH_REQUIRED"} 1`)
	assert.Contains(t, text, "postern_relay_tunnels 1")
	assert.NotContains(t, text, c.ID, "no connection id in labels")
	secret := strings.SplitN(c.AgentToken, "_", 3)[2] // the secret itself may contain "_"
	assert.NotContains(t, text, secret)
	assert.NotContains(t, text, h.adminKey)
}
