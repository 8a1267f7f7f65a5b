package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// TestHistoryOfAnAgentRestart: a real agent started, stopped and started
// again leaves its transitions in the history, in order, each with how
// long its state lasted, and `connections history` shows them.
func TestHistoryOfAnAgentRestart(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	apiAddr := testkit.FreeAddr(t)
	server := "http://" + apiAddr
	serveRelay(t, relayBin, server, "--data", filepath.Join(dir, "relay"), "--listen", apiAddr,
		"--proxy-listen", testkit.FreeAddr(t), "--node-id", "node-h")
	keyFile := filepath.Join(dir, "relay", "admin.key")
	env := []string{"POSTERN_SERVER=" + server}
	var conn api.Connection
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "create", "acme-gitlab", "--json",
		"--admin-key-file", keyFile), &conn))
	c := client.New(server, testkit.AdminKey(t, filepath.Join(dir, "relay")), nil)

	cfgFile := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + apiAddr},
		Token: conn.AgentToken, StatusListen: testkit.FreeAddr(t), Tunnels: 1})
	tunnel := func(want string) time.Time {
		waitStatus(t, c, conn.ID, func(s api.Status) bool { return s.TunnelStatus == want })
		return time.Now()
	}

	agent := start(t, agentBin, "run", "--config", cfgFile)
	up := tunnel("connected")
	time.Sleep(time.Second)
	stop(t, agent)
	down := tunnel("disconnected")
	time.Sleep(time.Second)
	agent = start(t, agentBin, "run", "--config", cfgFile)
	again := tunnel("connected")

	var h api.History
	require.Eventually(t, func() bool {
		var err error
		h, err = c.History(t.Context(), conn.ID, time.Time{}, 0)
		return err == nil && len(tunnelMoves(h)) == 3
	}, 10*time.Second, 50*time.Millisecond, "history: %+v", h)
	moves := tunnelMoves(h)
	assert.Equal(t, []string{"never_connected>connected", "connected>disconnected", "disconnected>connected"}, movesOf(moves))
	for _, m := range moves {
		assert.Equal(t, "node-h", m.Node)
	}
	assert.Equal(t, "AGENT_OFFLINE", string(moves[1].Reason))
	// Each state lasted from its transition to the next; the test saw the
	// same spans, give or take its polling.
	assert.InDelta(t, moves[1].Time.Sub(moves[0].Time).Seconds(), moves[0].DurationSeconds, 0.001)
	assert.InDelta(t, down.Sub(up).Seconds(), moves[0].DurationSeconds, 0.5, "connected for about a second")
	assert.InDelta(t, again.Sub(down).Seconds(), moves[1].DurationSeconds, 0.5, "disconnected for about a second")
	assert.True(t, moves[2].Ongoing)
	assert.False(t, moves[0].Ongoing)
	assert.Greater(t, h.Uptime.Day, 0.0)
	assert.Less(t, h.Uptime.Day, 1.0)

	text := string(runCLI(t, env, relayBin, "connections", "history", conn.ID, "--admin-key-file", keyFile))
	assert.Regexp(t, `tunnel\s+connected\s+disconnected\s+AGENT_OFFLINE\s+node-h\s+1s`, text)
	assert.Contains(t, text, "ongoing")
	assert.Contains(t, text, "uptime:")
	stop(t, agent)
}

func tunnelMoves(h api.History) []api.HistoryEntry {
	var out []api.HistoryEntry
	for _, e := range h.Transitions {
		if e.Type == api.EventTunnel {
			out = append(out, e)
		}
	}
	return out
}

func movesOf(es []api.HistoryEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.From + ">" + e.To
	}
	return out
}

// serveRelay runs `postern-relay serve` with args and waits until server
// answers /healthz.
func serveRelay(t *testing.T, relayBin, server string, args ...string) *testkit.Process {
	t.Helper()
	p := start(t, relayBin, append([]string{"serve"}, args...)...)
	require.Eventually(t, func() bool { return testkit.GetOK(http.DefaultClient, server+"/healthz") },
		20*time.Second, 50*time.Millisecond, "relay never became healthy:\n%s", p.Output())
	return p
}
