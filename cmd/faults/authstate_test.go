package faults

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/secret"
)

// tokenIDOf is the public id part of an agent token.
func tokenIDOf(token string) string {
	return token[len(secret.AgentTokenPrefix)+1 : len(secret.AgentTokenPrefix)+1+secret.IDLen]
}

// Someone who knows a connection's token id cannot make its offline
// agent look failing with one wrong secret, and never learns the id from
// what the relay reports; two wrong secrets within the window are an
// agent that is failing, and say so without the id.
func TestFaultAuthStateCannotBeSpoofedByOneAttempt(t *testing.T) {
	s := newSystem(t)
	client := &http.Client{Timeout: 5 * time.Second}
	id := tokenIDOf(s.token)

	require.Equal(t, http.StatusUnauthorized, tunnelAttempt(t.Context(), client, s.relay.apiAddr, testkit.WrongSecret(t, s.token)))
	st := s.relay.status(t, s.connID)
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Equal(t, "active", st.AuthStatus, "one wrong secret is not an agent failing")
	assert.Equal(t, "AGENT_NEVER_CONNECTED", string(st.Reason))
	assert.NotContains(t, st.LastError, id)

	require.Equal(t, http.StatusUnauthorized, tunnelAttempt(t.Context(), client, s.relay.apiAddr, testkit.WrongSecret(t, s.token)))
	st = s.relay.status(t, s.connID)
	assert.Equal(t, "failing", st.AuthStatus, "two within the window are")
	assert.Equal(t, "AGENT_AUTH_FAILED", string(st.Reason))
	assert.Contains(t, st.LastError, "wrong secret")
	assert.NotContains(t, st.LastError, id, "last_error never echoes the token id")

	_, err := s.connect(s.echo, 10*time.Second)
	var refused *refusedError
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, http.StatusBadGateway, refused.status)
	assert.Equal(t, "AGENT_AUTH_FAILED", refused.reason)
	assert.NotContains(t, s.relay.Output(), s.token[len(s.token)-20:], "no secret in the relay's logs")
}

// A token that lost the end of its secret (a truncated copy and paste) is
// named by the agent itself, which exits before it asks the relay; a
// client that sends one anyway (an older agent, a hand-written script) is
// an agent with a bad token at the relay, not one that never connected.
func TestFaultTruncatedTokenShowsFailing(t *testing.T) {
	s := newSystem(t)
	truncated := s.token[:len(s.token)-10]

	_, agentBin := testkit.Binaries(t)
	cfgFile := testkit.WriteAgentConfig(t, t.TempDir(), testkit.AgentConfig{Relays: []string{"ws://" + s.relay.apiAddr},
		Token: truncated, StatusListen: testkit.FreeAddr(t), Allow: []string{s.echo}})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, agentBin, "run", "--config", cfgFile).CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the agent refuses the token at start:\n%s", out)
	assert.Contains(t, string(out), "not a well-formed agent token: it is 54 characters long where an agent token has 64, so it looks cut short")
	assert.NotContains(t, string(out), truncated[len(truncated)-16:], "no secret in the agent's output")
	st := s.relay.status(t, s.connID)
	assert.Equal(t, "active", st.AuthStatus, "the relay was never asked")

	client := &http.Client{Timeout: 5 * time.Second}
	for range 2 { // one attempt alone is not an agent failing
		require.Equal(t, http.StatusUnauthorized, tunnelAttempt(t.Context(), client, s.relay.apiAddr, truncated))
	}
	st = s.relay.status(t, s.connID)
	assert.Equal(t, "failing", st.AuthStatus)
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Equal(t, "AGENT_AUTH_FAILED", string(st.Reason))
	assert.Contains(t, st.LastError, "malformed secret")
	assert.False(t, strings.Contains(st.LastError, tokenIDOf(s.token)), "no token id in last_error: %q", st.LastError)
}
