package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// `postern-agent status` says why tunnels are down, in words and in JSON:
// the relay's reason for a revoked connection, with the slow retry, and
// the cause when the relay cannot be reached at all.
func TestAgentStatusSaysWhyTunnelsAreDown(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	rp := startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))
	keyFile := filepath.Join(dir, "relay", "admin.key")
	env := []string{"POSTERN_SERVER=" + rp.server}
	var conn api.Connection
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "create", "jira", "--json", "--admin-key-file", keyFile), &conn))
	runCLI(t, env, relayBin, "connections", "revoke", conn.ID, "--admin-key-file", keyFile)

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "revoked"), 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "unreachable"), 0o700))
	revoked := testkit.WriteAgentConfig(t, filepath.Join(dir, "revoked"), testkit.AgentConfig{Relays: []string{"ws://" + rp.apiAddr},
		Token: conn.AgentToken, StatusListen: testkit.FreeAddr(t), Tunnels: 1})
	start(t, agentBin, "run", "--config", revoked)
	var st agent.LocalStatus
	require.Eventually(t, func() bool {
		res := runTool(t, agentBin, "status", "--config", revoked, "--json")
		return json.Unmarshal([]byte(res.stdout), &st) == nil && st.Down != nil
	}, 15*time.Second, 100*time.Millisecond, "status never said why the tunnel is down")
	assert.Equal(t, protocol.AgentTokenRevoked, st.Down.Reason)
	require.NotNil(t, st.Down.NextTryAt)
	assert.Greater(t, time.Until(*st.Down.NextTryAt), 4*time.Minute, "a revoked agent retries in minutes")
	text := runTool(t, agentBin, "status", "--config", revoked)
	assert.Equal(t, 1, text.code, "not ready")
	assert.Regexp(t, `down:\s+AGENT_TOKEN_REVOKED: .* next try in [45]m[0-9]+s\)`, text.stdout)

	unreachable := testkit.WriteAgentConfig(t, filepath.Join(dir, "unreachable"), testkit.AgentConfig{Relays: []string{"ws://" + testkit.FreeAddr(t)},
		Token: conn.AgentToken, StatusListen: testkit.FreeAddr(t)})
	p := start(t, agentBin, "run", "--config", unreachable)
	down := regexp.MustCompile(`down:\s+.*connection refused`)
	require.Eventually(t, func() bool {
		return down.MatchString(runTool(t, agentBin, "status", "--config", unreachable).stdout)
	}, 15*time.Second, 100*time.Millisecond, "status names the cause")
	time.Sleep(2 * time.Second) // several retries
	assert.Equal(t, 1, strings.Count(p.Output(), "cannot reach the relay"), "said once:\n%s", p.Output())
}

// A second agent on the same status address does not start; status with
// a config file that does not exist says so.
func TestAgentStartAndStatusErrors(t *testing.T) {
	_, agentBin := binaries(t)
	dir := t.TempDir()
	cfg := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + testkit.FreeAddr(t)},
		Token: "pat_abcabcabcabcabca_czNjcmV0LS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0", StatusListen: testkit.FreeAddr(t)})
	start(t, agentBin, "run", "--config", cfg)
	require.Eventually(t, func() bool { return runTool(t, agentBin, "status", "--config", cfg).stdout != "" },
		15*time.Second, 100*time.Millisecond, "the first agent serves its status")

	second := runTool(t, agentBin, "run", "--config", cfg)
	assert.NotZero(t, second.code)
	assert.Contains(t, second.stderr, "address already in use (is another postern-agent running with this config?")

	missing := filepath.Join(dir, "nope.yaml")
	_, err := os.Stat(missing)
	require.ErrorIs(t, err, os.ErrNotExist)
	res := runTool(t, agentBin, "status", "--config", missing)
	assert.NotZero(t, res.code)
	assert.Contains(t, res.stderr, "--config "+missing+": no such file")
}

// TestAgentNamesAMalformedTokenLocally: a token cut short when pasted is
// named by validate, doctor and run on the agent's machine, with what is
// wrong and what to do, and none of them asks the relay with it.
func TestAgentNamesAMalformedTokenLocally(t *testing.T) {
	_, agentBin := binaries(t)
	var asked atomic.Int32
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer relay.Close()
	whole := "pat_abcabcabcabcabca_czNjcmV0LS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0tLS0"
	dir := t.TempDir()
	cfg := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + relay.Listener.Addr().String()},
		Token: whole[:52], StatusListen: testkit.FreeAddr(t), Allow: []string{"127.0.0.1:9"}})
	tokenFile := filepath.Join(dir, "agent.token")
	problem := "token file " + tokenFile + ": not a well-formed agent token: it is 52 characters long where an agent token has 64, " +
		"so it looks cut short; copy it again in full from the output of `postern-relay connections create` or `rotate-token`"

	res := runTool(t, agentBin, "validate", "--config", cfg)
	assert.Equal(t, 2, res.code)
	assert.Equal(t, "error: "+problem+"\n", res.stderr)

	res = runTool(t, agentBin, "run", "--config", cfg)
	assert.Equal(t, 1, res.code)
	assert.Equal(t, "error: "+problem+"\n", res.stderr)

	res = runTool(t, agentBin, "doctor", "--config", cfg)
	assert.NotZero(t, res.code)
	assert.Contains(t, res.stdout, "FAIL  token            "+tokenFile+": not a well-formed agent token: it is 52 characters long")
	assert.Contains(t, res.stdout, "-> replace the content of "+tokenFile+" with the agent token exactly as "+
		"`postern-relay connections create` or `rotate-token` printed it: one line of 64 characters")
	assert.Contains(t, res.stdout, "relay auth       127.0.0.1:")
	assert.Zero(t, asked.Load(), "no command sent the malformed token to the relay")
	for _, out := range []string{res.stdout, res.stderr} {
		assert.NotContains(t, out, whole[30:52], "no part of the secret is shown")
	}
}
