package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// pausingConn is the product's end of a CONNECT tunnel that stops
// writing after half of n bytes until resume is closed, so that a
// transfer stays in flight for as long as the test wants.
type pausingConn struct {
	*testkit.BufferedConn
	half    int64
	written int64
	resume  <-chan struct{}
}

func (c *pausingConn) Write(p []byte) (int, error) {
	if c.written < c.half && c.written+int64(len(p)) >= c.half {
		n, err := c.BufferedConn.Write(p[:c.half-c.written])
		c.written += int64(n)
		if err != nil {
			return n, err
		}
		<-c.resume
		m, err := c.BufferedConn.Write(p[n:])
		c.written += int64(m)
		return n + m, err
	}
	n, err := c.BufferedConn.Write(p)
	c.written += int64(n)
	return n, err
}

func (c *pausingConn) CloseWrite() error {
	return c.BufferedConn.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// startPausedTransfer runs testkit.Exchange of n bytes (sent, the target's
// digest of them checked, n bytes back checked) on res, paused halfway
// until resume is closed; the returned channel gives its result.
func startPausedTransfer(res connectResult, n int64, resume <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	c := &pausingConn{BufferedConn: &testkit.BufferedConn{Conn: res.conn, R: res.br}, half: n / 2, resume: resume}
	go func() { done <- testkit.Exchange(c, n) }()
	return done
}

// relayStatus is the connection's status from `postern-relay connections
// status ID --json`.
func relayStatus(t *testing.T, env []string, relayBin, keyFile, connID string) api.Status {
	t.Helper()
	var st api.Status
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "status", connID, "--json", "--admin-key-file", keyFile), &st))
	return st
}

func hasWarning(st api.Status, code string) bool {
	for _, w := range st.Warnings {
		if w.Code == code {
			return true
		}
	}
	return false
}

// A second agent process with the same config (a cloned VM, or an admin's
// `postern-agent run` beside the service) joins while a 256 MiB transfer
// runs through the first: the transfer completes intact, both agents log
// and show "duplicate", the relay's status warns DUPLICATE_AGENT, and the
// warning clears once the second process stops.
func TestDuplicateAgentNeverCutsTheFirstAgentsTransfer(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	rp := startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))
	keyFile := filepath.Join(dir, "relay", "admin.key")
	env := []string{"POSTERN_SERVER=" + rp.server}
	var conn api.Connection
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "create", "gitlab", "--json", "--admin-key-file", keyFile), &conn))
	var key api.APIKey
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "api-keys", "create", "product",
		"--workspace", "default", "--json", "--admin-key-file", keyFile), &key))

	target := testkit.EchoServer(t)
	configs := make([]string, 2)
	for i := range configs {
		d := filepath.Join(dir, []string{"vm-1", "vm-2"}[i])
		require.NoError(t, os.MkdirAll(d, 0o700))
		// The same config but for the status address: a clone of the VM.
		configs[i] = testkit.WriteAgentConfig(t, d, testkit.AgentConfig{Relays: []string{"ws://" + rp.apiAddr},
			Token: conn.AgentToken, Allow: []string{target}, More: "agent_id: gitlab-agent\n"})
	}
	first := start(t, agentBin, "run", "--config", configs[0])
	require.Eventually(t, func() bool {
		st := relayStatus(t, env, relayBin, keyFile, conn.ID)
		return st.TunnelStatus == "connected" && len(st.Agents) == 1 && st.Agents[0].Tunnels == 2
	}, 15*time.Second, 100*time.Millisecond, "the first agent never connected both tunnels")

	const size = 256 << 20
	res := dialConnect(t, rp.proxyAddr, conn.ID, key.Key, target)
	require.Equal(t, http.StatusOK, res.status, "%s %+v", res.reason, res.body)
	defer res.conn.Close()
	resume := make(chan struct{})
	tr := startPausedTransfer(res, size, resume)
	defer func() {
		select {
		case <-resume:
		default:
			close(resume)
		}
	}()

	second := start(t, agentBin, "run", "--config", configs[1])
	var st api.Status
	// The warning comes with the second process's first tunnel; the status
	// is degraded until its second one is up too, then connected: both
	// processes serve, as replicas.
	require.Eventually(t, func() bool {
		st = relayStatus(t, env, relayBin, keyFile, conn.ID)
		return hasWarning(st, "DUPLICATE_AGENT") && st.TunnelStatus == "connected"
	}, 20*time.Second, 100*time.Millisecond, "the relay status never warned of the duplicate with every tunnel up")
	for _, w := range st.Warnings {
		if w.Code == "DUPLICATE_AGENT" {
			assert.Contains(t, w.Message, "gitlab-agent")
		}
	}
	for i, p := range []*testkit.Process{first, second} {
		require.Eventually(t, func() bool {
			return bytes.Contains([]byte(p.Output()), []byte("duplicate agent: another postern-agent process is connected with this agent_id"))
		}, 20*time.Second, 100*time.Millisecond, "agent %d never logged the duplicate:\n%s", i+1, p.Output())
		var local agent.LocalStatus
		require.Eventually(t, func() bool {
			out := runTool(t, agentBin, "status", "--config", configs[i], "--json")
			return json.Unmarshal([]byte(out.stdout), &local) == nil && local.Duplicate
		}, 20*time.Second, 100*time.Millisecond, "agent %d status --json never said duplicate", i+1)
		require.Len(t, local.Warnings, 1)
		assert.Equal(t, "DUPLICATE_AGENT", local.Warnings[0].Code)
		assert.Regexp(t, `duplicate:\s+agent id "gitlab-agent" is used by 2 agent processes`,
			runTool(t, agentBin, "status", "--config", configs[i]).stdout)
	}
	select {
	case err := <-tr:
		t.Fatalf("the transfer ended while paused: %v", err)
	default:
	}

	stop(t, second)
	require.Eventually(t, func() bool {
		return !hasWarning(relayStatus(t, env, relayBin, keyFile, conn.ID), "DUPLICATE_AGENT")
	}, 20*time.Second, 100*time.Millisecond, "the warning never cleared after the second agent stopped")
	require.Eventually(t, func() bool {
		out := runTool(t, agentBin, "status", "--config", configs[0], "--json")
		var local agent.LocalStatus
		return json.Unmarshal([]byte(out.stdout), &local) == nil && !local.Duplicate && local.TunnelsUp == 2
	}, 20*time.Second, 100*time.Millisecond, "the first agent still says duplicate")
	assert.Contains(t, first.Output(), "duplicate agent cleared")

	close(resume)
	select {
	case err := <-tr:
		require.NoError(t, err, "the transfer through the first agent was cut or changed")
	case <-time.After(5 * time.Minute):
		t.Fatal("the 256 MiB transfer never finished")
	}
	assert.NotContains(t, first.Output(), "control stream: EOF", "the first agent's tunnels were knocked off")
}
