package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// start runs bin; the test's cleanup checks that it exits cleanly within
// 15 s of SIGTERM, unless the test stopped it earlier.
func start(t *testing.T, bin string, args ...string) *testkit.Process {
	t.Helper()
	p := testkit.Start(t, filepath.Base(bin), bin, args...)
	t.Cleanup(func() { stop(t, p) })
	return p
}

// stop sends SIGTERM and checks that p exits cleanly within 15 s.
func stop(t *testing.T, p *testkit.Process) {
	t.Helper()
	assert.NoError(t, p.Stop(15*time.Second), "output:\n%s", p.Output())
}

func runCLI(t *testing.T, env []string, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s %v: %s", filepath.Base(bin), args, stderr.String())
	return out
}

func TestBinariesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	relayBin, agentBin := testkit.Binaries(t)
	dir := t.TempDir()
	apiAddr, proxyAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	server := "http://" + apiAddr

	relayProc := start(t, relayBin, "serve", "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", proxyAddr)
	require.Eventually(t, func() bool { return testkit.GetOK(http.DefaultClient, server+"/healthz") },
		20*time.Second, 50*time.Millisecond, "relay never became healthy:\n%s", relayProc.Output())

	keyFile := filepath.Join(dir, "relay", "admin.key")
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "admin.key is private")

	env := []string{"POSTERN_SERVER=" + server}
	var conn api.Connection
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "connections", "create", "acme-jira",
		"--workspace", "acme", "--json", "--admin-key-file", keyFile), &conn))
	require.True(t, strings.HasPrefix(conn.AgentToken, "pat_"), "agent token shown once: %+v", conn)
	var key api.APIKey
	require.NoError(t, json.Unmarshal(runCLI(t, env, relayBin, "api-keys", "create", "product",
		"--workspace", "acme", "--json", "--admin-key-file", keyFile), &key))
	require.NotEmpty(t, key.Key)

	list := runCLI(t, env, relayBin, "connections", "list", "--admin-key-file", keyFile)
	assert.Contains(t, string(list), conn.ID)

	target := testkit.EchoServer(t)
	_, port, _ := net.SplitHostPort(target)
	tokenFile := filepath.Join(dir, "agent.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(conn.AgentToken+"\n"), 0o600))
	cfgFile := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(
		"relay_url: ws://%s\ntoken_file: %s\nstatus_listen: %s\naudit_log: audit.jsonl\nallow:\n  - ip: 127.0.0.1\n    ports: [%s]\n",
		apiAddr, tokenFile, testkit.FreeAddr(t), port)), 0o644))
	notRunning := exec.Command(agentBin, "status", "--config", cfgFile)
	require.Error(t, notRunning.Run(), "status of an agent that is not running fails")

	explain := runCLI(t, nil, agentBin, "validate", "--config", cfgFile, "--explain", target)
	assert.Contains(t, string(explain), "allowed")

	agentProc := start(t, agentBin, "run", "--config", cfgFile)
	c := client.New(server, key.Key, nil)
	waitStatus(t, c, conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })
	human := runCLI(t, env, relayBin, "connections", "status", conn.ID, "--base-url", "https://10.9.9.9", "--admin-key-file", keyFile)
	assert.Regexp(t, `tunnel:\s+connected`, string(human))
	assert.Regexp(t, `allowlist:\s+missing`, string(human))
	assert.Regexp(t, `reason:\s+ALLOWLIST_MISSING`, string(human))

	var local struct {
		Ready     bool `json:"ready"`
		TunnelsUp int  `json:"tunnels_up"`
	}
	require.Eventually(t, func() bool {
		out, err := exec.Command(agentBin, "status", "--config", cfgFile, "--json").Output()
		return err == nil && json.Unmarshal(out, &local) == nil && local.TunnelsUp == 2
	}, 10*time.Second, 50*time.Millisecond, "agent status never showed 2 tunnels")
	assert.True(t, local.Ready)
	assert.Regexp(t, `tunnels:\s+2 of 2 up`, string(runCLI(t, nil, agentBin, "status", "--config", cfgFile)))

	roundTrip(t, dialConnect(t, proxyAddr, conn.ID, key.Key, target), 4<<20)
	assertRefused(t, dialConnect(t, proxyAddr, conn.ID, key.Key, "10.1.2.3:443"), http.StatusForbidden, protocol.AllowlistMissing)

	st, err := c.Status(context.Background(), conn.ID, "http://"+target)
	require.NoError(t, err)
	assert.Equal(t, "allowed", st.AllowlistStatus)
	assert.True(t, st.Ready)
	require.Len(t, st.Agents, 1)
	assert.Equal(t, 2, st.Agents[0].Tunnels, "default of two tunnels")

	stop(t, agentProc)
	auditLog, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	require.NoError(t, err, "audit_log is relative to the config file")
	assert.Regexp(t, `"target":"`+regexp.QuoteMeta(target)+`","addr":"[^"]+","decision":"allowed".*"bytes_to_target":4194304`, string(auditLog))
	assert.Contains(t, string(auditLog), `"target":"10.1.2.3:443","decision":"denied","reason":"ALLOWLIST_MISSING"`)
	waitStatus(t, c, conn.ID, func(s api.Status) bool { return s.TunnelStatus == "disconnected" })
	assertRefused(t, dialConnect(t, proxyAddr, conn.ID, key.Key, target), http.StatusBadGateway, protocol.AgentOffline)

	stop(t, relayProc)
	secret := strings.SplitN(conn.AgentToken, "_", 3)[2] // the secret itself may contain "_"
	for name, out := range map[string]string{"relay": relayProc.Output(), "agent": agentProc.Output()} {
		assert.NotContains(t, out, secret, "%s log leaks the agent token", name)
		assert.NotContains(t, out, key.Key, "%s log leaks the API key", name)
	}
}
