package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// setupTimeout bounds bringing the relay and agent up.
const setupTimeout = 30 * time.Second

// stack is a running relay and agent with one connection whose allowlist
// admits the given loopback target ports.
type stack struct {
	relay, agent *testkit.Process
	// profiles serves the processes' profiles, when the run keeps them.
	profiles  *profiler
	proxyAddr string
	connID    string
	key       string // the product's API key
	// tls, when set, is how the product reaches the relay's proxy
	// listener: a relay started with --tls-cert serves TLS on both.
	tls *tls.Config
}

// dialFunc opens a byte stream to addr, directly or through the tunnel.
type dialFunc func(ctx context.Context, addr string) (net.Conn, error)

func dialDirect(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// startStack starts the relay, provisions a connection and an API key
// through the relay's API, starts an agent allowed to reach the ports of
// targets on 127.0.0.1, and waits until its tunnels are up. With withTLS
// the relay serves wss:// and https on a self-signed certificate, which
// the agent trusts through ca_file and the product through its pool.
func startStack(tb testing.TB, relayBin, agentBin string, withTLS bool, targets ...string) *stack {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	dir := tb.TempDir()
	apiAddr, proxyAddr := testkit.FreeAddr(tb), testkit.FreeAddr(tb)
	dataDir := filepath.Join(dir, "relay")
	args := []string{"serve", "--data", dataDir, "--listen", apiAddr, "--proxy-listen", proxyAddr}
	scheme, more, hc := "http", "", http.DefaultClient
	var tlsCfg *tls.Config
	if withTLS {
		certFile, keyFile, pool := testkit.SelfSignedCert(tb, dir)
		args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
		scheme, more = "https", "ca_file: "+certFile+"\n"
		tlsCfg = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
		tr := &http.Transport{TLSClientConfig: tlsCfg}
		tb.Cleanup(tr.CloseIdleConnections)
		hc = &http.Client{Transport: tr}
	}
	base := scheme + "://" + apiAddr

	prof := newProfiler(tb)
	relay := startProcess(tb, "relay", relayBin, prof.env("relay"), args...)
	testkit.WaitFor(tb, setupTimeout, "relay answers /healthz", func() bool {
		return testkit.GetOK(hc, base+"/healthz")
	})
	admin := client.New(base, testkit.AdminKey(tb, dataDir), hc)
	conn, err := admin.CreateConnection(ctx, "bench", "bench")
	if err != nil {
		tb.Fatalf("create connection: %v", err)
	}
	key, err := admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "bench", Workspace: "bench"})
	if err != nil {
		tb.Fatalf("create api key: %v", err)
	}

	cfgFile := testkit.WriteAgentConfig(tb, dir, testkit.AgentConfig{Relays: []string{"ws" + base[len("http"):]},
		Token: conn.AgentToken, StatusListen: testkit.FreeAddr(tb), Allow: targets, More: more})
	agent := startProcess(tb, "agent", agentBin, prof.env("agent"), "run", "--config", cfgFile)

	product := client.New(base, key.Key, hc)
	if err := waitConnected(ctx, product, conn.ID); err != nil {
		tb.Fatalf("agent: %v\nagent output:\n%s\nrelay output:\n%s", err, agent.Output(), relay.Output())
	}
	return &stack{
		relay:     relay,
		agent:     agent,
		profiles:  prof,
		proxyAddr: proxyAddr,
		connID:    conn.ID,
		key:       key.Key,
		tls:       tlsCfg,
	}
}

// waitConnected waits until every tunnel the agent reports is up, so the
// first measurement does not race the second tunnel's handshake.
func waitConnected(ctx context.Context, c *client.Client, connID string) error {
	var last string
	for {
		st, err := c.Status(ctx, connID, "")
		switch {
		case err != nil:
			last = err.Error()
		case st.TunnelStatus == "connected" && len(st.Agents) == 1 && st.Agents[0].Tunnels >= 2:
			return nil
		default:
			last = fmt.Sprintf("tunnel_status=%s agents=%d", st.TunnelStatus, len(st.Agents))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tunnel not connected (%s): %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// errRefused reports a CONNECT the proxy answered with something other
// than 200.
var errRefused = errors.New("proxy refused CONNECT")

// dialTunnel asks the relay's proxy for a stream to addr and returns the
// connection positioned at the first byte from the target.
func (s *stack) dialTunnel(ctx context.Context, addr string) (net.Conn, error) {
	c, err := dialDirect(ctx, s.proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("dial proxy: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(15 * time.Second)
	}
	_ = c.SetDeadline(deadline)
	if s.tls != nil {
		tc := tls.Client(c, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS to proxy: %w", err)
		}
		c = tc
	}
	resp, br, err := testkit.Connect(c, s.connID, s.key, addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		c.Close()
		return nil, fmt.Errorf("%w: %s: %s %s", errRefused, resp.Status, resp.Header.Get("Postern-Reason"), body)
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() == 0 {
		return c, nil
	}
	return &testkit.BufferedConn{Conn: c, R: br}, nil
}

// proxyURL is the relay's proxy listener as a client's proxy setting,
// with the stack's connection and key.
func (s *stack) proxyURL() *neturl.URL {
	return &neturl.URL{Scheme: "http", User: neturl.UserPassword(s.connID, s.key), Host: s.proxyAddr}
}

// cpuTime reports the CPU time the relay and the agent have used so far.
func (s *stack) cpuTime() (relay, agent time.Duration, err error) {
	relay, rerr := s.relay.CPUTime()
	agent, aerr := s.agent.CPUTime()
	return relay, agent, errors.Join(rerr, aerr)
}

// peakRSS reports the relay's and agent's resident-set high-water marks.
func (s *stack) peakRSS() (relay, agent int64, err error) {
	relay, rerr := s.relay.PeakRSS()
	agent, aerr := s.agent.PeakRSS()
	return relay, agent, errors.Join(rerr, aerr)
}
