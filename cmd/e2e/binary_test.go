package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/audit"
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

// binaries skips the test under -short and otherwise returns the real
// postern-relay and postern-agent, built once for the package.
func binaries(t *testing.T) (relayBin, agentBin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	return testkit.Binaries(t)
}

// runCLI runs a command that must succeed, with env added to this
// process's environment, and returns what it printed on stdout.
func runCLI(t *testing.T, env []string, bin string, args ...string) []byte {
	t.Helper()
	res := runToolEnv(t, append(os.Environ(), env...), bin, args...)
	require.Zero(t, res.code, "%s %v: %s", filepath.Base(bin), args, res.stderr)
	return []byte(res.stdout)
}

func TestBinariesEndToEnd(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	rp := startRelayProcess(t, relayBin, filepath.Join(dir, "relay"))
	apiAddr, proxyAddr, server, relayProc := rp.apiAddr, rp.proxyAddr, rp.server, rp.proc

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
	cfgFile := testkit.WriteAgentConfig(t, dir, testkit.AgentConfig{Relays: []string{"ws://" + apiAddr},
		Token: conn.AgentToken, StatusListen: testkit.FreeAddr(t), Allow: []string{target}, More: "audit_log: audit.jsonl\n"})
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
	secret := testkit.SecretOf(conn.AgentToken)
	for name, out := range map[string]string{"relay": relayProc.Output(), "agent": agentProc.Output()} {
		assert.NotContains(t, out, secret, "%s log leaks the agent token", name)
		assert.NotContains(t, out, key.Key, "%s log leaks the API key", name)
	}
}

// relayProcess is `postern-relay serve` on fresh loopback ports, healthy.
type relayProcess struct {
	proc               *testkit.Process
	apiAddr, proxyAddr string
	server             string // http://apiAddr
}

// startRelayProcess runs postern-relay with its data in dataDir and waits
// until it answers /healthz; the test's cleanup stops it.
func startRelayProcess(t *testing.T, relayBin, dataDir string) relayProcess {
	t.Helper()
	rp := relayProcess{apiAddr: testkit.FreeAddr(t), proxyAddr: testkit.FreeAddr(t)}
	rp.server = "http://" + rp.apiAddr
	rp.proc = serveRelay(t, relayBin, rp.server, "--data", dataDir, "--listen", rp.apiAddr, "--proxy-listen", rp.proxyAddr)
	return rp
}

// connectProxy is a corporate egress proxy on loopback: CONNECT only,
// Basic auth required, and it records what was tunnelled.
type connectProxy struct {
	addr     string
	user     string
	pass     string
	mu       sync.Mutex
	connects []string
	refused  int
}

func startConnectProxy(t *testing.T, user, pass string) *connectProxy {
	t.Helper()
	p := &connectProxy{user: user, pass: pass}
	p.addr = testkit.Serve(t, p.serve)
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	if req.Method != http.MethodConnect || req.Header.Get("Proxy-Authorization") != want {
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.connects = append(p.connects, req.Host)
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	_ = c.SetDeadline(time.Time{})
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (p *connectProxy) seen() (connects []string, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.connects...), p.refused
}

// The agent reaches a TLS relay only through the customer's egress proxy
// (CONNECT with Basic auth) and trusts the relay through ca_file; targets
// are dialled directly, never through that proxy. Wrong proxy credentials
// are named as a 407.
func TestAgentThroughCorporateProxyToTLSRelay(t *testing.T) {
	relayBin, agentBin := binaries(t)
	dir := t.TempDir()
	certFile, keyFile, pool := testkit.SelfSignedCert(t, dir)
	apiAddr, proxyAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	relayProc := start(t, relayBin, "serve", "--data", filepath.Join(dir, "relay"),
		"--listen", apiAddr, "--proxy-listen", proxyAddr, "--tls-cert", certFile, "--tls-key", keyFile)

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	server := "https://" + apiAddr
	require.Eventually(t, func() bool { return testkit.GetOK(httpc, server+"/healthz") },
		20*time.Second, 50*time.Millisecond, "relay never became healthy over TLS:\n%s", relayProc.Output())

	admin := client.New(server, testkit.AdminKey(t, filepath.Join(dir, "relay")), httpc)
	conn, err := admin.CreateConnection(t.Context(), "acme-jira", "acme")
	require.NoError(t, err)
	key, err := admin.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)

	corp := startConnectProxy(t, "alice", "s3cret-proxy-pass")
	target := testkit.EchoServer(t)
	writeConfig := func(proxyPass string) string {
		return testkit.WriteAgentConfig(t, t.TempDir(), testkit.AgentConfig{Relays: []string{"wss://" + apiAddr},
			Token: conn.AgentToken, StatusListen: testkit.FreeAddr(t), Allow: []string{target},
			More: fmt.Sprintf("ca_file: %s\negress_proxy: http://alice:%s@%s\naudit_log: audit.jsonl\n", certFile, proxyPass, corp.addr)})
	}

	// Wrong proxy password: the agent says 407 and keeps retrying.
	bad := start(t, agentBin, "run", "--config", writeConfig("wrong"))
	require.Eventually(t, func() bool { _, refused := corp.seen(); return refused >= 1 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(bad.Output(), "407") }, 10*time.Second, 20*time.Millisecond,
		"the agent's log names the proxy's 407:\n%s", bad.Output())
	stop(t, bad)
	assert.NotContains(t, bad.Output(), "s3cret-proxy-pass")
	assert.NotContains(t, bad.Output(), conn.AgentToken)

	goodConfig := writeConfig("s3cret-proxy-pass")
	good := start(t, agentBin, "run", "--config", goodConfig)
	waitStatus(t, client.New(server, key.Key, httpc), conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })
	roundTrip(t, dialTLSConnect(t, proxyAddr, pool, conn.ID, key.Key, target), 1<<20)

	connects, _ := corp.seen()
	require.NotEmpty(t, connects)
	for _, c := range connects {
		assert.Equal(t, apiAddr, c, "only the relay is reached through the egress proxy, never a target")
	}
	// Audit lines reach the file within a second (agent/audit), and the
	// bundle holds what is on disk.
	auditEntry(t, filepath.Join(filepath.Dir(goodConfig), "audit.jsonl"), func(e audit.Entry) bool { return e.Target == target })
	checkAgentBundle(t, agentBin, goodConfig, target, testkit.SecretOf(conn.AgentToken), "s3cret-proxy-pass", testkit.SecretOf(key.Key))
	stop(t, good)
	assert.NotContains(t, good.Output(), "s3cret-proxy-pass", "the proxy password never appears in logs")
}

// dialTLSConnect is dialConnect to a relay proxy listener that speaks TLS.
func dialTLSConnect(t *testing.T, proxyAddr string, pool *x509.CertPool, connID, key, target string) connectResult {
	t.Helper()
	c, err := tls.Dial("tcp", proxyAddr, &tls.Config{RootCAs: pool})
	require.NoError(t, err)
	resp, br, err := testkit.Connect(c, connID, key, target)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	t.Cleanup(func() { _ = c.Close() })
	return connectResult{status: resp.StatusCode, conn: &tlsHalfCloser{c}, br: br}
}

// tlsHalfCloser lets roundTrip half-close a TLS connection.
type tlsHalfCloser struct{ *tls.Conn }

func (t *tlsHalfCloser) CloseWrite() error { return t.Conn.CloseWrite() }
