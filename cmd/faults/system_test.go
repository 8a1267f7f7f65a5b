package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// startProc starts bin. Its cleanup stops it the way an operator stops a
// binary that may be draining streams: SIGTERM, a second SIGTERM after
// 5 s that forces the stop, SIGKILL 10 s after that. How it exits is not
// checked: these tests stop, freeze and kill processes on purpose.
func startProc(t *testing.T, name, bin string, args ...string) *testkit.Process {
	t.Helper()
	p := testkit.Start(t, name, bin, args...)
	t.Cleanup(func() {
		if err := p.StopForced(5*time.Second, 10*time.Second); err != nil {
			t.Log(err)
		}
	})
	return p
}

// usage reads what /proc says about p; failing to is a test bug.
func usage(t *testing.T, p *testkit.Process) testkit.Usage {
	t.Helper()
	u, err := p.Usage()
	require.NoError(t, err, "read /proc of %s", p.Name())
	return u
}

// relayProc is a running postern-relay.
type relayProc struct {
	*testkit.Process
	apiAddr, proxyAddr, dataDir string
	admin                       *client.Client
}

// startRelay runs postern-relay serve on dataDir and the given addresses,
// with any extra flags, and waits until /healthz answers.
func startRelay(t *testing.T, dataDir, apiAddr, proxyAddr string, extra ...string) *relayProc {
	t.Helper()
	relayBin, _ := testkit.Binaries(t)
	p := startProc(t, "relay", relayBin, append([]string{"serve", "--data", dataDir, "--listen", apiAddr,
		"--proxy-listen", proxyAddr, "--node-id", "fault-node", "--log-level", "debug"}, extra...)...)
	r := &relayProc{Process: p, apiAddr: apiAddr, proxyAddr: proxyAddr, dataDir: dataDir}
	require.Eventually(t, func() bool { return p.Exited() || r.healthy() }, 30*time.Second, 10*time.Millisecond,
		"relay never became healthy")
	require.False(t, p.Exited(), "relay exited: %v", p.Err())
	r.admin = client.New("http://"+apiAddr, testkit.AdminKey(t, dataDir), nil)
	return r
}

var quickClient = &http.Client{Timeout: 2 * time.Second}

func (r *relayProc) healthy() bool {
	return testkit.GetOK(quickClient, "http://"+r.apiAddr+"/healthz")
}

// status reads the connection's status; it fails only on a test bug.
func (r *relayProc) status(t *testing.T, connID string) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.admin.Status(ctx, connID, "")
	require.NoError(t, err)
	return st
}

// tryStatus reads the status without failing the test (for polling a
// relay that may be stopped).
func (r *relayProc) tryStatus(connID string) (api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.admin.Status(ctx, connID, "")
}

// agentProc is a running postern-agent.
type agentProc struct {
	*testkit.Process
	statusAddr string
}

// localStatus reads the agent's status endpoint.
func (a *agentProc) localStatus() (agent.LocalStatus, error) {
	var st agent.LocalStatus
	resp, err := quickClient.Get("http://" + a.statusAddr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status answered %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// tunnelsUp is the agent's count of live tunnels, -1 when it cannot say.
func (a *agentProc) tunnelsUp() int {
	st, err := a.localStatus()
	if err != nil {
		return -1
	}
	return st.TunnelsUp
}

// system is a relay with one connection, a workspace API key, an echo
// target and a sink target, ready for agents.
type system struct {
	relay  *relayProc
	connID string
	token  string
	key    string
	echo   string // host:port of the echo target
	sink   *sinkServer
}

func newSystem(t *testing.T) *system {
	t.Helper()
	r := startRelay(t, t.TempDir(), testkit.FreeAddr(t), testkit.FreeAddr(t))
	ctx := context.Background()
	conn, err := r.admin.CreateConnection(ctx, "faults", "acme")
	require.NoError(t, err)
	key, err := r.admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)
	return &system{relay: r, connID: conn.ID, token: conn.AgentToken, key: key.Key,
		echo: testkit.EchoServer(t), sink: newSinkServer(t)}
}

// agentOptions shape one agent's config.
type agentOptions struct {
	// relays are the host:port addresses the agent dials (the relay, or
	// proxies in front of it); default the relay's API address.
	relays  []string
	tunnels int // default 2
}

// startAgent runs postern-agent against the system and waits until the
// relay shows every tunnel up.
func (s *system) startAgent(t *testing.T, o agentOptions) *agentProc {
	t.Helper()
	a := s.launchAgent(t, o)
	s.waitConnected(t, 20*time.Second)
	return a
}

// launchAgent runs postern-agent without waiting for its tunnels.
func (s *system) launchAgent(t *testing.T, o agentOptions) *agentProc {
	t.Helper()
	_, agentBin := testkit.Binaries(t)
	if len(o.relays) == 0 {
		o.relays = []string{s.relay.apiAddr}
	}
	if o.tunnels == 0 {
		o.tunnels = 2
	}
	urls := make([]string, len(o.relays))
	for i, r := range o.relays {
		urls[i] = "ws://" + r
	}
	statusAddr := testkit.FreeAddr(t)
	cfgFile := testkit.WriteAgentConfig(t, t.TempDir(), testkit.AgentConfig{Relays: urls, Token: s.token,
		StatusListen: statusAddr, Tunnels: o.tunnels, Allow: []string{s.echo, s.sink.addr},
		More: "agent_id: fault-agent\nlog_level: debug\n"})
	p := startProc(t, "agent", agentBin, "run", "--config", cfgFile)
	return &agentProc{Process: p, statusAddr: statusAddr}
}

// waitConnected waits until the relay's status is connected, that is
// every tunnel the agent wants is up.
func (s *system) waitConnected(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	return testkit.WaitFor(t, within, "relay status connected", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && st.TunnelStatus == "connected"
	})
}

// agentTunnels sums the tunnels the relay holds for the connection.
func agentTunnels(st api.Status) int {
	n := 0
	for _, a := range st.Agents {
		n += a.Tunnels
	}
	return n
}
