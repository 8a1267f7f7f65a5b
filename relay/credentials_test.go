package relay

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// newKey creates an API key with the admin key.
func (h *harness) newKey(t *testing.T, req api.CreateAPIKeyRequest) api.APIKey {
	t.Helper()
	k := decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys", h.adminKey, req), http.StatusCreated)
	h.remember(k.Key)
	return k
}

// requireEndsBy requires a stream to end (read error, not a timeout)
// before deadline.
func requireEndsBy(t *testing.T, c net.Conn, deadline time.Time, what string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(deadline))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s still open at the deadline", what)
		return
	}
}

// requireOpen checks a proxied echo stream still carries bytes.
func requireOpen(t *testing.T, pc *proxyConn, what string) {
	t.Helper()
	require.NoError(t, pc.SetDeadline(time.Now().Add(waitFor)))
	_, err := pc.Write([]byte("z"))
	require.NoError(t, err, what)
	b := make([]byte, 1)
	_, err = pc.Read(b)
	require.NoError(t, err, what)
}

// drainStream reads an event stream to its end and returns its last
// comment.
func drainStream(s *eventStream) (lastComment string) {
	for f := range s.frames {
		if f.comment != "" {
			lastComment = f.comment
		}
	}
	return lastComment
}

func TestRevokingAnAPIKeyEndsItsStreamsAtOnce(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.waitTunnels(t, c.ID, 1)
	k := h.newKey(t, api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})

	doomed := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, k.Key), []byte("x"))
	require.Equal(t, http.StatusOK, doomed.resp.StatusCode)
	requireOpen(t, doomed, "the key's stream before the revocation")
	events := h.subscribe(t, k.Key, "", "")
	kept, _ := h.connectEcho(t, c.ID, []byte("y"))
	keptEvents := h.subscribe(t, h.adminKey, "", "")

	start := time.Now()
	revoked := decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys/"+k.ID+"/revoke", h.adminKey, nil), http.StatusOK)
	require.NotNil(t, revoked.RevokedAt)
	assert.Empty(t, revoked.Key, "the answer never carries the key")

	requireEndsBy(t, doomed, start.Add(time.Second), "the revoked key's CONNECT stream")
	select {
	case <-events.done:
	case <-time.After(time.Until(start.Add(time.Second))):
		t.Fatal("the revoked key's event stream still open a second after the revocation")
	}
	assert.Equal(t, "api key revoked or expired", drainStream(events), "the stream says why it ends")
	requireOpen(t, kept, "another key's stream")
	select {
	case <-keptEvents.done:
		t.Fatal("another key's event stream ended")
	default:
	}

	e := requireRefusal(t, h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, k.Key), nil).reply(),
		http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	assert.Contains(t, e.Message, "API key "+k.ID+" was revoked at")
	e = requireRefusal(t, h.call(t, http.MethodGet, "/v1/connections", k.Key, nil), http.StatusUnauthorized, protocol.APIAuthRequired)
	assert.Contains(t, e.Message, "was revoked")
	e = requireRefusal(t, h.call(t, http.MethodGet, "/v1/connections", k.Key[:len(k.Key)-4]+"AAAA", nil),
		http.StatusUnauthorized, protocol.APIAuthRequired)
	assert.NotContains(t, e.Message, "revoked", "a wrong secret learns nothing of the key's state")

	again := decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys/"+k.ID+"/revoke", h.adminKey, nil), http.StatusOK)
	assert.True(t, revoked.RevokedAt.Equal(*again.RevokedAt), "revoking twice keeps the first time")
}

func TestAnExpiredAPIKeyIsRefusedAndItsStreamsEnd(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "acme")
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.waitTunnels(t, c.ID, 1)
	until := time.Now().Add(1500 * time.Millisecond)
	k := h.newKey(t, api.CreateAPIKeyRequest{Name: "short", Workspace: "acme", ExpiresAt: &until})
	require.NotNil(t, k.ExpiresAt)
	assert.True(t, until.UTC().Equal(*k.ExpiresAt))

	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, k.Key), []byte("x"))
	require.Equal(t, http.StatusOK, pc.resp.StatusCode)
	events := h.subscribe(t, k.Key, "", "")
	requireOpen(t, pc, "the stream before the key expires")

	requireEndsBy(t, pc, until.Add(time.Second), "the expired key's CONNECT stream")
	assert.False(t, time.Now().Before(until), "the stream ended before the key expired")
	select {
	case <-events.done:
	case <-time.After(time.Until(until.Add(time.Second))):
		t.Fatal("the expired key's event stream still open")
	}

	e := requireRefusal(t, h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, k.Key), nil).reply(),
		http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	assert.Contains(t, e.Message, "API key "+k.ID+" expired at")
	e = requireRefusal(t, h.call(t, http.MethodGet, "/v1/connections", k.Key, nil), http.StatusUnauthorized, protocol.APIAuthRequired)
	assert.Contains(t, e.Message, "expired")
}

func TestAPIKeyExpiryIsChecked(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ws := h.createKey(t, "acme")
	tests := map[string]struct {
		key  string
		body string
		want protocol.Reason
		says string
	}{
		"in the past":        {h.adminKey, `{"name":"k","workspace":"acme","expires_at":"2020-01-01T00:00:00Z"}`, protocol.InvalidRequest, "expires_at"},
		"beyond ten years":   {h.adminKey, `{"name":"k","workspace":"acme","expires_at":"2999-01-01T00:00:00Z"}`, protocol.InvalidRequest, "expires_at"},
		"not a time":         {h.adminKey, `{"name":"k","workspace":"acme","expires_at":"soon"}`, protocol.InvalidRequest, `"soon"`},
		"by a workspace key": {ws, `{"name":"k","workspace":"acme","expires_at":"2030-01-01T00:00:00Z"}`, protocol.Forbidden, "admin"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := h.call(t, http.MethodPost, "/v1/api-keys", tc.key, json.RawMessage(tc.body))
			e := requireRefusal(t, r, tc.want.Info().HTTPStatus, tc.want)
			assert.Contains(t, e.Message, tc.says, "the message says what is wrong")
		})
	}
}

func TestListAndRevokeAPIKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	until := time.Now().Add(90 * 24 * time.Hour)
	k := h.newKey(t, api.CreateAPIKeyRequest{Name: "ci", Workspace: "acme", ExpiresAt: &until})
	unused := h.newKey(t, api.CreateAPIKeyRequest{Name: "unused", Workspace: "acme"})
	used := time.Now()
	decode[api.ConnectionList](t, h.call(t, http.MethodGet, "/v1/connections", k.Key, nil), http.StatusOK)

	r := h.call(t, http.MethodGet, "/v1/api-keys", h.adminKey, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.NotContains(t, string(r.body), secretPart(k.Key), "the list carries no secret")
	assert.NotContains(t, string(r.body), secretPart(h.adminKey), "the list carries no secret")
	var raw struct {
		APIKeys []map[string]any `json:"api_keys"`
	}
	require.NoError(t, json.Unmarshal(r.body, &raw))
	require.Len(t, raw.APIKeys, 3)
	for _, entry := range raw.APIKeys {
		assert.NotContains(t, entry, "key")
		assert.NotContains(t, entry, "hash")
	}
	list := decode[api.APIKeyList](t, r, http.StatusOK)
	got := list.APIKeys[1]
	assert.Equal(t, k.ID, got.ID)
	assert.Equal(t, "ci", got.Name)
	assert.Equal(t, "acme", got.Workspace)
	assert.False(t, got.Admin)
	require.NotNil(t, got.ExpiresAt)
	assert.Nil(t, got.RevokedAt)
	require.NotNil(t, got.LastUsedAt, "the key's use is recorded")
	assert.WithinDuration(t, used, *got.LastUsedAt, time.Second)
	assert.Nil(t, list.APIKeys[2].LastUsedAt, "a key never used says so")
	assert.Equal(t, unused.ID, list.APIKeys[2].ID)
	assert.True(t, list.APIKeys[0].Admin)

	requireRefusal(t, h.call(t, http.MethodGet, "/v1/api-keys", k.Key, nil), http.StatusForbidden, protocol.Forbidden)
	requireRefusal(t, h.call(t, http.MethodPost, "/v1/api-keys/"+k.ID+"/revoke", k.Key, nil), http.StatusForbidden, protocol.Forbidden)
	requireRefusal(t, h.call(t, http.MethodPost, "/v1/api-keys/nope/revoke", h.adminKey, nil), http.StatusNotFound, protocol.APIKeyNotFound)

	decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys/"+k.ID+"/revoke", h.adminKey, nil), http.StatusOK)
	list = decode[api.APIKeyList](t, h.call(t, http.MethodGet, "/v1/api-keys", h.adminKey, nil), http.StatusOK)
	assert.NotNil(t, list.APIKeys[1].RevokedAt, "the list shows the revocation")

	adminID := list.APIKeys[0].ID
	e := requireRefusal(t, h.call(t, http.MethodPost, "/v1/api-keys/"+adminID+"/revoke", h.adminKey, nil),
		http.StatusBadRequest, protocol.InvalidRequest)
	assert.Contains(t, e.Message, "last active admin key")
	next := h.newKey(t, api.CreateAPIKeyRequest{Name: "next admin", Admin: true})
	decode[api.APIKey](t, h.call(t, http.MethodPost, "/v1/api-keys/"+adminID+"/revoke", next.Key, nil), http.StatusOK)
	requireRefusal(t, h.call(t, http.MethodGet, "/v1/api-keys", h.adminKey, nil), http.StatusUnauthorized, protocol.APIAuthRequired)
}

// Two admins revoking each other's keys at once: one revocation wins, the
// other is refused, and an admin key is left.
func TestAdminsRevokingEachOtherLeaveAnAdmin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	list := decode[api.APIKeyList](t, h.call(t, http.MethodGet, "/v1/api-keys", h.adminKey, nil), http.StatusOK)
	first := list.APIKeys[0].ID
	second := h.newKey(t, api.CreateAPIKeyRequest{Name: "second admin", Admin: true})
	for range 10 {
		if t.Failed() {
			return
		}
		// The two requests go out from their own goroutines, so they use
		// the client directly: only the test's goroutine may fail it.
		revoke := func(id, key string) (int, error) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.ep.apiURL+"/v1/api-keys/"+id+"/revoke", nil)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := h.ep.client.Do(req)
			if err != nil {
				return 0, err
			}
			_ = resp.Body.Close()
			return resp.StatusCode, nil
		}
		var wg sync.WaitGroup
		codes, errs := make([]int, 2), make([]error, 2)
		wg.Go(func() { codes[0], errs[0] = revoke(second.ID, h.adminKey) })
		wg.Go(func() { codes[1], errs[1] = revoke(first, second.Key) })
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		ok := 0
		for _, c := range codes {
			if c == http.StatusOK {
				ok++
			}
		}
		require.Equal(t, 1, ok, "exactly one of the two revocations passes: %v", codes)
		// Make a fresh pair for the next round from the admin that is left.
		left, leftKey := first, h.adminKey
		if codes[1] == http.StatusOK {
			left, leftKey = second.ID, second.Key
		}
		first, h.adminKey = left, leftKey
		second = h.newKey(t, api.CreateAPIKeyRequest{Name: "next admin", Admin: true})
	}
}

// tunnelEnd waits for an agent's tunnel to end and returns the Revoked
// notice it got, if any.
func tunnelEnd(t *testing.T, a *fakeAgent, by time.Time, what string) (protocol.Revoked, bool) {
	t.Helper()
	select {
	case <-a.Session.Done():
	case <-time.After(time.Until(by)):
		t.Fatalf("%s still up", what)
	}
	var rv protocol.Revoked
	var saw bool
	for f := range a.Control() {
		if f.Type == protocol.FrameRevoked {
			require.NoError(t, f.Decode(protocol.FrameRevoked, &rv))
			saw = true
		}
	}
	return rv, saw
}

func TestRotateExpiringPreviousCutsItsTunnels(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	old := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.waitTunnels(t, c.ID, 1)
	pc, _ := h.connectEcho(t, c.ID, []byte("x"))

	start := time.Now()
	tok := decode[api.TokenResponse](t, h.call(t, http.MethodPost, "/v1/connections/"+c.ID+"/tokens", h.adminKey,
		api.RotateTokenRequest{ExpirePrevious: true}), http.StatusCreated)
	h.remember(tok.AgentToken)
	assert.WithinDuration(t, start, tok.PreviousValidUntil, time.Second)

	rv, saw := tunnelEnd(t, old, start.Add(time.Second), "the old token's tunnel a second after the rotation")
	require.True(t, saw, "the agent is told why its tunnel ends")
	assert.Equal(t, protocol.AgentTokenInvalid, rv.Reason)
	assert.Contains(t, rv.Message, "expired")
	requireEndsBy(t, pc, start.Add(time.Second), "the stream of the old token's tunnel")

	_, refused, err := h.dialAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	require.Error(t, err)
	require.NotNil(t, refused)
	assert.Equal(t, string(protocol.AgentTokenInvalid), refused.Header.Get("Postern-Reason"))
	h.connectAgent(t, tok.AgentToken, testHello("agent-1", 1), echo)
	h.waitTunnels(t, c.ID, 1)
}

func TestTunnelIsCutWhenItsTokenExpires(t *testing.T) {
	t.Parallel()
	const overlap = 700 * time.Millisecond
	h, c := newConnHarness(t, "", func(c *Config) { c.TokenOverlap = overlap })
	old := h.connectAgent(t, c.AgentToken, testHello("agent-old", 1), echo)
	h.waitTunnels(t, c.ID, 1)

	tok := h.rotate(t, c.ID)
	fresh := h.connectAgent(t, tok.AgentToken, testHello("agent-new", 1), echo)
	h.waitTunnels(t, c.ID, 2)

	rv, saw := tunnelEnd(t, old, tok.PreviousValidUntil.Add(time.Second), "the old token's tunnel after the overlap")
	assert.False(t, time.Now().Before(tok.PreviousValidUntil), "cut before the overlap ended")
	require.True(t, saw, "the agent is told why its tunnel ends")
	assert.Equal(t, protocol.AgentTokenInvalid, rv.Reason)
	select {
	case <-fresh.Session.Done():
		t.Fatal("the new token's tunnel was cut")
	default:
	}
	h.waitTunnels(t, c.ID, 1)
}

// A node that did not hear of a rotation (it started later, or missed the
// cluster's notice) still cuts a tunnel opened there with an expiring
// token when the token ends.
func TestTunnelIsCutWhenItsTokenExpiresOnANodeThatMissedTheRotation(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.TokenOverlap = 700 * time.Millisecond })
	other := newHarness(t, func(cfg *Config) { cfg.Store = h.srv.store; cfg.NodeID = "node-other" })
	tok := h.rotate(t, c.ID)

	late := other.connectAgent(t, c.AgentToken, testHello("agent-late", 1), echo)
	other.waitTunnels(t, c.ID, 1)
	rv, saw := tunnelEnd(t, late, tok.PreviousValidUntil.Add(time.Second), "the tunnel opened with the old token")
	assert.False(t, time.Now().Before(tok.PreviousValidUntil), "cut before the overlap ended")
	require.True(t, saw)
	assert.Equal(t, protocol.AgentTokenInvalid, rv.Reason)
}
