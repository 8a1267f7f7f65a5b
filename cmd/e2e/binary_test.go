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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// buildBinaries builds both commands once per test binary run.
func buildBinaries(t *testing.T) (relayBin, agentBin string) {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"postern-relay", "postern-agent"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/postern/postern/cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "build %s: %s", name, out)
	}
	return filepath.Join(dir, "postern-relay"), filepath.Join(dir, "postern-agent")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// process is a started binary with its combined output captured.
type process struct {
	cmd *exec.Cmd
	out *syncWriter
}

// output returns what the process printed so far.
func (p *process) output() string { return p.out.String() }

func (p *process) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		assert.NoError(t, err, "exit after SIGTERM; output:\n%s", p.output())
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		t.Errorf("did not exit within 15s of SIGTERM; output:\n%s", p.output())
	}
}

func start(t *testing.T, env []string, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out // one writer: one pipe, no interleaving races
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, out: out}
	t.Cleanup(func() { p.stop(t) })
	return p
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
	relayBin, agentBin := buildBinaries(t)
	dir := t.TempDir()
	apiAddr, proxyAddr := freePort(t), freePort(t)
	server := "http://" + apiAddr

	relayProc := start(t, nil, relayBin, "serve", "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", proxyAddr)
	require.Eventually(t, func() bool {
		resp, err := http.Get(server + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "relay never became healthy:\n%s", relayProc.output())

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

	target := echoServer(t)
	_, port, _ := net.SplitHostPort(target)
	tokenFile := filepath.Join(dir, "agent.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(conn.AgentToken+"\n"), 0o600))
	cfgFile := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(
		"relay_url: ws://%s\ntoken_file: %s\nstatus_listen: %s\naudit_log: audit.jsonl\nallow:\n  - ip: 127.0.0.1\n    ports: [%s]\n",
		apiAddr, tokenFile, freePort(t), port)), 0o644))
	notRunning := exec.Command(agentBin, "status", "--config", cfgFile)
	require.Error(t, notRunning.Run(), "status of an agent that is not running fails")

	explain := runCLI(t, nil, agentBin, "validate", "--config", cfgFile, "--explain", target)
	assert.Contains(t, string(explain), "allowed")

	agentProc := start(t, nil, agentBin, "run", "--config", cfgFile)
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

	agentProc.stop(t)
	auditLog, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	require.NoError(t, err, "audit_log is relative to the config file")
	assert.Regexp(t, `"target":"`+regexp.QuoteMeta(target)+`","addr":"[^"]+","decision":"allowed".*"bytes_to_target":4194304`, string(auditLog))
	assert.Contains(t, string(auditLog), `"target":"10.1.2.3:443","decision":"denied","reason":"ALLOWLIST_MISSING"`)
	waitStatus(t, c, conn.ID, func(s api.Status) bool { return s.TunnelStatus == "disconnected" })
	assertRefused(t, dialConnect(t, proxyAddr, conn.ID, key.Key, target), http.StatusBadGateway, protocol.AgentOffline)

	relayProc.stop(t)
	secret := strings.SplitN(conn.AgentToken, "_", 3)[2] // the secret itself may contain "_"
	for name, out := range map[string]string{"relay": relayProc.output(), "agent": agentProc.output()} {
		assert.NotContains(t, out, secret, "%s log leaks the agent token", name)
		assert.NotContains(t, out, key.Key, "%s log leaks the API key", name)
	}
}
