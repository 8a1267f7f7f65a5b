package relay

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

func TestTunnelRefusesBadTokensAlike(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	unknown, err := secret.New(secret.AgentTokenPrefix)
	require.NoError(t, err)

	tests := map[string]string{
		"no header":           "",
		"basic scheme":        "Basic " + c.AgentToken,
		"malformed token":     "Bearer pat_nothing",
		"api key as token":    "Bearer " + h.adminKey,
		"unknown token id":    "Bearer " + unknown.Display,
		"wrong secret":        "Bearer " + wrongSecret(t, c.AgentToken),
		"token with trailing": "Bearer " + c.AgentToken + "x",
	}
	bodies := map[string]answer{}
	for name, auth := range tests {
		t.Run(name, func(t *testing.T) {
			r := h.tunnelRequest(t, auth)
			requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenInvalid)
			assert.Empty(t, r.header.Get("Upgrade"), "no upgrade for a refused token")
			bodies[name] = r
		})
	}
	want := withoutRequestID(t, bodies["no header"])
	for name, r := range bodies {
		assert.Equal(t, want, withoutRequestID(t, r), "%s must answer like a missing token", name)
	}
	st := h.status(t, c.ID, "")
	assert.Equal(t, "never_connected", st.TunnelStatus, "no refused token may bring a tunnel up")
}

func TestTunnelRefusesRevokedConnection(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	h.revoke(t, c.ID)

	r := h.tunnelRequest(t, "Bearer "+c.AgentToken)
	requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenRevoked)

	// A real agent dial gets the same answer, before any upgrade.
	_, resp, err := h.dialAgent(t, c.AgentToken, testHello("a", 1), echo)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, string(protocol.AgentTokenRevoked), resp.Header.Get("Postern-Reason"))
}

func TestTunnelRequiresSubprotocol(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	// A WebSocket upgrade that offers no subprotocol.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.ep.apiURL+protocol.TunnelPath, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+c.AgentToken)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp := do(t, h.ep.client, req)
	assert.Equal(t, http.StatusBadRequest, resp.status)
	assert.Equal(t, string(protocol.InvalidRequest), resp.header.Get("Postern-Reason"))
	assert.NotEmpty(t, resp.header.Get("Postern-Request-Id"))
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus)
}

// tokenID is the id part of a credential.
func tokenID(cred string) string {
	return cred[len(secret.AgentTokenPrefix)+1 : len(secret.AgentTokenPrefix)+1+secret.IDLen]
}

func TestWrongSecretMarksAuthFailing(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	other := h.createConnection(t, "jira", "")

	// One wrong secret proves nothing: token ids are not secret.
	r := h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenInvalid)
	st := h.status(t, c.ID, "")
	assertBlocked(t, st, "never_connected", "active", protocol.AgentNeverConnected)

	// The second within the window does.
	r = h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenInvalid)
	st = h.status(t, c.ID, "")
	assertBlocked(t, st, "never_connected", "failing", protocol.AgentAuthFailed)
	assert.Contains(t, st.LastError, "wrong secret")
	assert.NotContains(t, st.LastError, secretPart(c.AgentToken))
	assert.NotContains(t, st.LastError, tokenID(c.AgentToken), "the token id is not echoed")

	// The proxy says the same thing to the product, without the id.
	pc := h.connect(t, "gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), nil)
	e := requireRefusal(t, pc.reply(), http.StatusBadGateway, protocol.AgentAuthFailed)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, e.ProviderErrorCode)
	assert.NotContains(t, e.Message, tokenID(c.AgentToken))

	// Only the connection named by the token id is affected.
	ost := h.status(t, other.ID, "")
	assert.Equal(t, "active", ost.AuthStatus)
	assert.Equal(t, protocol.AgentNeverConnected, ost.Reason)

	// A good agent takes over: auth is active again while it is up.
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)
	st = h.status(t, c.ID, "")
	assert.Equal(t, "connected", st.TunnelStatus)
	assert.Equal(t, "active", st.AuthStatus)
	a.Close()
}

func TestAuthFailureWindowEnds(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.AuthFailureWindow = time.Second })
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	require.Equal(t, "failing", h.status(t, c.ID, "").AuthStatus)
	require.Eventually(t, func() bool {
		st := h.pollStatus(c.ID)
		return st.AuthStatus == "active" && st.Reason == protocol.AgentNeverConnected
	}, waitFor, pollEvery)
}

// Two refusals further apart than the window are two single refusals, not
// a run: auth stays active.
func TestAuthFailuresOutsideTheWindowDoNotAddUp(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.AuthFailureWindow = 200 * time.Millisecond })
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	time.Sleep(300 * time.Millisecond)
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
	st := h.status(t, c.ID, "")
	assert.Equal(t, "active", st.AuthStatus)
	assert.Equal(t, protocol.AgentNeverConnected, st.Reason)
}

// A token whose secret part was cut or mistyped still names its
// connection: two such attempts make its auth failing, and say the secret
// is malformed.
func TestMalformedSecretIsAttributed(t *testing.T) {
	t.Parallel()
	for name, mangle := range map[string]func(string) string{
		"truncated":   func(tok string) string { return tok[:len(tok)-5] },
		"secret gone": func(tok string) string { return tok[:len(secret.AgentTokenPrefix)+1+secret.IDLen] },
		"mistyped":    func(tok string) string { return tok[:len(tok)-1] + "~" },
		"non-canonical": func(tok string) string {
			// The last character carries 2 bits that must be zero; set one.
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			return tok[:len(tok)-1] + string(alphabet[strings.IndexByte(alphabet, tok[len(tok)-1])+1])
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h, c := newConnHarness(t, "")
			for range 2 {
				requireRefusal(t, h.tunnelRequest(t, "Bearer "+mangle(c.AgentToken)), http.StatusUnauthorized, protocol.AgentTokenInvalid)
			}
			st := h.status(t, c.ID, "")
			assert.Equal(t, "never_connected", st.TunnelStatus)
			assert.Equal(t, "failing", st.AuthStatus)
			assert.Equal(t, protocol.AgentAuthFailed, st.Reason)
			assert.Contains(t, st.LastError, "malformed secret")
			assert.NotContains(t, st.LastError, tokenID(c.AgentToken))
		})
	}
}

func TestTunnelUp(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.HeartbeatInterval = 7 * time.Second })
	before := time.Now()
	hello := testHello("agent-1", 1)
	a := h.connectAgent(t, c.AgentToken, hello, echo)

	assert.Equal(t, "node-test", a.Welcome.NodeID)
	assert.Equal(t, 7*time.Second, a.Welcome.HeartbeatInterval())
	assert.NotEmpty(t, a.Welcome.SessionID)

	h.waitTunnels(t, c.ID, 1)
	st := h.status(t, c.ID, "")
	assert.Equal(t, c.ID, st.ConnectionID)
	assert.Equal(t, "connected", st.TunnelStatus)
	assert.Equal(t, "active", st.AuthStatus)
	assert.Equal(t, "configured", st.AllowlistStatus)
	assert.Empty(t, st.Reason)
	assert.Empty(t, st.ProviderErrorCode)
	assert.True(t, st.Ready)
	require.NotNil(t, st.LastSeenAt)
	require.Len(t, st.Agents, 1)
	ag := st.Agents[0]
	assert.Equal(t, "agent-1", ag.AgentID)
	assert.Equal(t, "host-agent-1", ag.Hostname)
	assert.Equal(t, "1.2.3", ag.Version)
	assert.Equal(t, "node-test", ag.RelayNode)
	assert.Equal(t, 1, ag.Tunnels)
	assert.Zero(t, ag.ActiveStreams)
	assert.WithinDuration(t, before, ag.ConnectedAt, 5*time.Second)
	want := hello.Allowlist
	assert.Equal(t, want.Status, ag.Allowlist.Status)
	assert.Equal(t, want.Mode, ag.Allowlist.Mode)
	assert.Equal(t, want.Count, ag.Allowlist.Count)
	assert.Equal(t, want.SHA256, ag.Allowlist.SHA256)
	assert.True(t, want.LoadedAt.Equal(ag.Allowlist.LoadedAt))
	assert.Equal(t, want.Allow, ag.Allowlist.Allow)
	assert.Equal(t, want.Deny, ag.Allowlist.Deny)

	t.Run("health reports replace the hello summary", func(t *testing.T) {
		newer := testAllowlist()
		newer.SHA256 = "0000000000000000000000000000000000000000000000000000000000000001"
		newer.Count = 1
		newer.Allow = newer.Allow[:1]
		newer.Deny = nil
		a.SendHealth(t, protocol.Health{Time: time.Now(), TunnelsUp: 1, Version: "1.2.3", Allowlist: newer})
		require.Eventually(t, func() bool {
			st := h.pollStatus(c.ID)
			return len(st.Agents) == 1 && st.Agents[0].Allowlist.SHA256 == newer.SHA256
		}, waitFor, pollEvery)
		st := h.status(t, c.ID, "")
		assert.Equal(t, 1, st.Agents[0].Allowlist.Count)
		assert.False(t, st.Agents[0].LastHeartbeatAt.IsZero())
	})
}

func TestTunnelRejectsBadHello(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	tests := map[string]protocol.Hello{
		"empty agent id":    testHello("", 1),
		"agent id too long": testHello(string(make([]byte, 129)), 1),
		"version too long":  func() protocol.Hello { x := testHello("a", 1); x.Version = string(make([]byte, 65)); return x }(),
		"hostname too long": func() protocol.Hello { x := testHello("a", 1); x.Hostname = string(make([]byte, 256)); return x }(),
	}
	for name, hello := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := h.dialAgent(t, c.AgentToken, hello, echo)
			require.Error(t, err, "the relay must not answer Welcome")
		})
	}
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus)
}

func TestTunnelWithoutHelloIsDropped(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	base, err := url.Parse(h.relayURL())
	require.NoError(t, err)
	sess, err := tunnel.Dial(ctx, base, tunnel.DialOptions{HTTPClient: h.ep.client, Token: c.AgentToken, Config: tunnel.DefaultConfig()})
	require.NoError(t, err)
	defer sess.Close()
	// The agent says nothing; the relay hangs up after the handshake
	// timeout instead of holding the socket.
	select {
	case <-sess.Done():
	case <-ctx.Done():
	}
	assert.NoError(t, ctx.Err(), "the relay, not the test, ended the socket")
	assert.Equal(t, "never_connected", h.status(t, c.ID, "").TunnelStatus)
}

func TestTunnelIgnoresAgentExtras(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.firstTunnel(t, c, testHello("agent-1", 1), echo)

	// A stream opened by the agent is not part of the protocol: the relay
	// resets it.
	st, err := a.Session.Open(t.Context())
	require.NoError(t, err)
	require.NoError(t, st.SetReadDeadline(time.Now().Add(waitFor)))
	_, err = st.Read(make([]byte, 1))
	assert.ErrorIs(t, err, tunnel.ErrStreamReset)

	// Unknown control frames are skipped; the tunnel stays up and serves.
	require.NoError(t, a.Session.Send(protocol.FrameType(99), map[string]string{"future": "yes"}, waitFor))
	require.NoError(t, a.Session.Send(protocol.FrameGoAway, protocol.GoAway{Reason: "confused agent"}, waitFor))
	_, got := h.connectEcho(t, c.ID, []byte("ok"))
	assert.Equal(t, "ok", string(got))
	assert.Equal(t, "connected", h.status(t, c.ID, "").TunnelStatus)
}

// lateRevokeStore runs a hook right after the first lookup of one
// connection once armed: the lookup's answer is then already stale.
type lateRevokeStore struct {
	store.Store

	mu   sync.Mutex
	id   string
	hook func()
}

func (s *lateRevokeStore) arm(id string, hook func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id, s.hook = id, hook
}

func (s *lateRevokeStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c, err := s.Store.GetConnection(ctx, id)
	s.mu.Lock()
	var hook func()
	if id == s.id {
		hook, s.hook, s.id = s.hook, nil, ""
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return c, err
}

// A revocation that lands between an agent's authentication and the
// registration of its tunnel must still close that tunnel.
func TestRevokeDuringHandshakeClosesTunnel(t *testing.T) {
	t.Parallel()
	st := &lateRevokeStore{}
	h, c := newConnHarness(t, "", func(c *Config) { st.Store = c.Store; c.Store = st })

	// Exactly what the revoke handler does, at the worst moment.
	st.arm(c.ID, func() {
		_, err := st.Store.RevokeConnection(context.Background(), c.ID, time.Now().UTC())
		if err == nil {
			h.srv.broker.CloseConnection(c.ID, "connection revoked by an administrator")
		}
	})
	// Authentication saw the connection before the revocation, so the
	// handshake completes.
	a, _, err := h.dialAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	require.NoError(t, err)
	select {
	case <-a.Session.Done():
	case <-time.After(time.Second):
		require.FailNow(t, "a tunnel of a revoked connection stayed up")
	}
	var saw bool
	for f := range a.Control() {
		saw = saw || f.Type == protocol.FrameRevoked
	}
	assert.True(t, saw, "the agent is told why")
	h.waitTunnels(t, c.ID, 0)
	assert.Equal(t, "revoked", h.status(t, c.ID, "").TunnelStatus)
}

// An agent that reconnects while the relay still holds its old tunnels
// (it hung, or its link dropped without a FIN) wins with its newest
// sessions: the oldest beyond the tunnels it wants are closed.
func TestNewestSessionsOfAnAgentWin(t *testing.T) {
	h := newHarness(t)
	c := h.createConnection(t, "acme", "acme")
	old := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer old.Close()
	h.waitTunnels(t, c.ID, 1)

	newer := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer newer.Close()
	requireDone(t, old.Session.Done(), "the older session of the agent was not closed")
	h.waitTunnels(t, c.ID, 1)
	assert.False(t, newer.Session.IsClosed(), "the newest session stays")

	// Another replica of the same connection is not affected.
	other := h.connectAgent(t, c.AgentToken, testHello("agent-2", 1), echo)
	defer other.Close()
	h.waitTunnels(t, c.ID, 2)
	assert.False(t, newer.Session.IsClosed())
}

// A diagnostic handshake (doctor) gets Welcome but is no tunnel: the
// connection's status does not change.
func TestProbeHandshakeChangesNoStatus(t *testing.T) {
	h := newHarness(t)
	c := h.createConnection(t, "acme", "acme")
	hello := testHello("agent-1-doctor", 1)
	hello.Probe = true
	probe := h.connectAgent(t, c.AgentToken, hello, echo)
	defer probe.Close()
	assert.Equal(t, h.srv.NodeID(), probe.Welcome.NodeID)
	requireDone(t, probe.Session.Done(), "the relay kept the probe's tunnel open")
	st := h.status(t, c.ID, "")
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Nil(t, st.LastSeenAt)
}
