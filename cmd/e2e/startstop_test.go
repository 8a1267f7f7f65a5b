package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// TestRelayWritesAdminKeyOnlyOnceListening: a relay that cannot bind its
// proxy port fails, and leaves no admin.key for a relay that never ran.
func TestRelayWritesAdminKeyOnlyOnceListening(t *testing.T) {
	relayBin, _ := binaries(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "relay")
	res := runToolEnv(t, os.Environ(), relayBin, "serve", "--data", data,
		"--listen", testkit.FreeAddr(t), "--proxy-listen", busy.Addr().String())
	assert.Equal(t, 1, res.code)
	assert.Contains(t, res.stderr, "error: listen tcp "+busy.Addr().String()+": bind: address already in use")
	_, err = os.Stat(filepath.Join(data, "admin.key"))
	assert.ErrorIs(t, err, os.ErrNotExist, "no admin.key from a relay that did not start")
}

// TestPlaintextWarningAndPromptStop: a plain-HTTP listener other machines
// can reach is warned about at start (a loopback one is not), and with an
// agent connected but no stream open, SIGTERM ends agent and relay at
// once rather than after the 30 s drain.
func TestPlaintextWarningAndPromptStop(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	apiAddr := testkit.FreeAddr(t)
	_, proxyPort, err := net.SplitHostPort(testkit.FreeAddr(t))
	require.NoError(t, err)
	relayProc := serveRelay(t, relayBin, "http://"+apiAddr, "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", "0.0.0.0:"+proxyPort)
	warning := "listening without TLS on an address other machines can reach"
	testkit.WaitFor(t, 10*time.Second, "plaintext warning", func() bool { return strings.Contains(relayProc.Output(), warning) })
	assert.Equal(t, 1, strings.Count(relayProc.Output(), warning), "only the proxy listener is reachable:\n%s", relayProc.Output())
	assert.Regexp(t, `listener=proxy addr=(0\.0\.0\.0|\[::\]):`+proxyPort+`\n`, relayProc.Output())

	conn := createConnection(t, relayBin, apiAddr, filepath.Join(dir, "relay"))
	cfg := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + apiAddr},
		Token: conn, StatusListen: testkit.FreeAddr(t), Allow: []string{"127.0.0.1:9"}})
	agentProc := start(t, agentBin, "run", "--config", cfg)
	testkit.WaitFor(t, 20*time.Second, "agent tunnels up", func() bool { return strings.Count(agentProc.Output(), "tunnel up") == 2 })

	for _, p := range []*testkit.Process{agentProc, relayProc} {
		began := time.Now()
		p.Signal(t, syscall.SIGTERM)
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still running 10s after SIGTERM with nothing open", p.Name())
		}
		took := time.Since(began)
		require.NoError(t, p.Err(), p.Output())
		assert.Less(t, took, 2*time.Second, "%s: a stop with no open stream waits for nothing", p.Name())
		t.Logf("%s stopped %s after SIGTERM", p.Name(), took.Round(time.Millisecond))
	}
}

// createConnection creates a connection with the CLI and returns its
// agent token.
func createConnection(t *testing.T, relayBin, apiAddr, dataDir string) string {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "agent.token")
	runCLI(t, []string{"POSTERN_SERVER=http://" + apiAddr}, relayBin, "connections", "create", "acme",
		"--admin-key-file", filepath.Join(dataDir, "admin.key"), "--token-file", tokenFile)
	return readToken(t, tokenFile)
}

// TestRelayConfigErrorsNameTheLine: a relay config file with mistakes
// fails the start with every problem on its own file:line, an unknown key
// with the key it likely meant, as an agent config does; nothing is
// written to the data directory.
func TestRelayConfigErrorsNameTheLine(t *testing.T) {
	relayBin, _ := binaries(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Join([]string{
		"listn: 127.0.0.1:8080",
		"proxy-listen: 127.0.0.1:8081",
		"heartbeat_interval: 10",
		"webhooks:",
		"  - url: https://hooks.example/in",
		"    secret: inline",
	}, "\n")+"\n"), 0o600))
	data := filepath.Join(dir, "relay")
	res := runToolEnv(t, os.Environ(), relayBin, "serve", "--config", cfg, "--data", data)
	assert.Equal(t, 1, res.code)
	assert.Equal(t, "error: "+cfg+`:1: unknown key "listn"; did you mean "listen"?`+"\n"+
		cfg+`:2: unknown key "proxy-listen"; did you mean "proxy_listen"?`+"\n"+
		cfg+`:3: heartbeat_interval: want a duration such as "2s" or "500ms", got the number 10`+"\n"+
		cfg+`:6: unknown key "secret" in webhooks[0]; did you mean "secret_file"?`+"\n", res.stderr)
	_, err := os.Stat(data)
	assert.ErrorIs(t, err, os.ErrNotExist, "a relay whose config is wrong creates nothing")
}
