package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// fixture is one relay with a connection, a workspace key and a target.
type fixture struct {
	relay  *testRelay
	conn   api.Connection
	key    string // workspace API key
	target string // echo server host:port
	port   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	r := startRelay(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	ctx := context.Background()
	conn, err := r.admin.CreateConnection(ctx, "acme-gitlab", "acme")
	require.NoError(t, err)
	require.NotEmpty(t, conn.AgentToken)
	key, err := r.admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "product", Workspace: "acme"})
	require.NoError(t, err)
	target := testkit.EchoServer(t)
	_, port, _ := net.SplitHostPort(target)
	return &fixture{relay: r, conn: conn, key: key.Key, target: target, port: port}
}

// rules allows the echo target by IP (loopback needs an exact ip rule) and
// by the name demo.postern.test.
func (f *fixture) rules() string {
	return fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%s]\n  - host: demo.postern.test\n    ports: [%s]\n", f.port, f.port)
}

func (f *fixture) startAgent(t *testing.T) *testAgent {
	t.Helper()
	ta := startAgent(t, f.relay, f.conn.AgentToken, f.rules(), map[string]string{"demo.postern.test": "127.0.0.1"})
	waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })
	return ta
}

func (f *fixture) connect(t *testing.T, target string) connectResult {
	t.Helper()
	return dialConnect(t, f.relay.proxyAddr, f.conn.ID, f.key, target)
}

// assertRefused checks status, Postern-Reason and the JSON body.
func assertRefused(t *testing.T, res connectResult, status int, reason protocol.Reason) {
	t.Helper()
	assert.Equal(t, status, res.status, "HTTP status")
	assert.Equal(t, string(reason), res.reason, "Postern-Reason header")
	assert.Equal(t, reason, res.body.Reason, "body reason")
	assert.Equal(t, reason.Info().ProviderErrorCode, res.body.ProviderErrorCode, "body provider_error_code")
	assert.NotEmpty(t, res.body.Message, "body message")
}

// roundTrip pushes n bytes through an open CONNECT tunnel to the echo
// target, half-closes, and checks the digest and the n bytes that come back.
func roundTrip(t *testing.T, res connectResult, n int64) {
	t.Helper()
	require.Equal(t, http.StatusOK, res.status)
	require.NoError(t, testkit.Exchange(&testkit.BufferedConn{Conn: res.conn, R: res.br}, n))
}

func TestAllowedTargetCarries64MiBBothWays(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	sizes := map[string]int64{f.target: 64 << 20, "demo.postern.test:" + f.port: 1 << 20}
	for target, size := range sizes {
		t.Run(target, func(t *testing.T) {
			roundTrip(t, f.connect(t, target), size)
		})
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)

	t.Run("no agent yet", func(t *testing.T) {
		assertRefused(t, f.connect(t, f.target), http.StatusBadGateway, protocol.AgentNeverConnected)
		st, err := f.relay.admin.Status(context.Background(), f.conn.ID, "")
		require.NoError(t, err)
		assert.Equal(t, "never_connected", st.TunnelStatus)
		assert.Equal(t, protocol.AgentNeverConnected, st.Reason)
	})

	ta := f.startAgent(t)

	t.Run("target not allowlisted", func(t *testing.T) {
		assertRefused(t, f.connect(t, "10.1.2.3:443"), http.StatusForbidden, protocol.AllowlistMissing)
		assertRefused(t, f.connect(t, "gitlab.other.example:443"), http.StatusForbidden, protocol.AllowlistMissing)
	})
	t.Run("metadata address", func(t *testing.T) {
		assertRefused(t, f.connect(t, "169.254.169.254:80"), http.StatusForbidden, protocol.TargetBlocked)
	})
	t.Run("malformed target", func(t *testing.T) {
		assertRefused(t, f.connect(t, "0x7f.1:"+f.port), http.StatusBadRequest, protocol.BadTarget)
	})
	t.Run("wrong api key", func(t *testing.T) {
		res := dialConnect(t, f.relay.proxyAddr, f.conn.ID, "pak_aaaaaaaaaaaaaaaa_"+string(make([]byte, 0)), f.target)
		assertRefused(t, res, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
	})
	t.Run("another workspace's key answers like an unknown connection", func(t *testing.T) {
		other, err := f.relay.admin.CreateAPIKey(context.Background(), api.CreateAPIKeyRequest{Name: "other", Workspace: "globex"})
		require.NoError(t, err)
		foreign := dialConnect(t, f.relay.proxyAddr, f.conn.ID, other.Key, f.target)
		unknown := dialConnect(t, f.relay.proxyAddr, "conn_doesnotexist", other.Key, f.target)
		assertRefused(t, foreign, http.StatusProxyAuthRequired, protocol.ProxyAuthRequired)
		assert.Equal(t, unknown.status, foreign.status)
		assert.Equal(t, unknown.reason, foreign.reason)
		assert.Equal(t, unknown.body.Message, foreign.body.Message)

		_, err = client.New("http://"+f.relay.apiAddr, other.Key, nil).Status(context.Background(), f.conn.ID, "")
		var apiErr *api.Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, protocol.ConnectionNotFound, apiErr.Reason)
	})
	t.Run("allowed target works", func(t *testing.T) {
		roundTrip(t, f.connect(t, f.target), 1<<20)
	})
	t.Run("agent stopped", func(t *testing.T) {
		ta.stop(t)
		waitStatus(t, f.relay.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "disconnected" })
		assertRefused(t, f.connect(t, f.target), http.StatusBadGateway, protocol.AgentOffline)
	})
}

// TestAwkwardTargetsThroughConnect sends a sample of the allowlist's
// awkward targets through the real CONNECT path and checks the answer a
// product would see. The full table lives in allowlist's tests.
func TestAwkwardTargetsThroughConnect(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	p := f.port
	tests := map[string]struct {
		target string
		status int
		reason protocol.Reason
	}{
		"canonical IP allowed":               {"127.0.0.1:" + p, http.StatusOK, ""},
		"name allowed":                       {"demo.postern.test:" + p, http.StatusOK, ""},
		"name with trailing dot":             {"demo.postern.test.:" + p, http.StatusOK, ""},
		"name in mixed case":                 {"DEMO.Postern.Test:" + p, http.StatusOK, ""},
		"hex IPv4 never reinterpreted":       {"0x7f.0.0.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"decimal IPv4":                       {"2130706433:" + p, http.StatusBadRequest, protocol.BadTarget},
		"octal IPv4":                         {"0177.0.0.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"short IPv4":                         {"127.1:" + p, http.StatusBadRequest, protocol.BadTarget},
		"port with leading zero":             {"127.0.0.1:0" + p, http.StatusBadRequest, protocol.BadTarget},
		"port 0":                             {"127.0.0.1:0", http.StatusBadRequest, protocol.BadTarget},
		"port 65536":                         {"127.0.0.1:65536", http.StatusBadRequest, protocol.BadTarget},
		"metadata IPv4":                      {"169.254.169.254:80", http.StatusForbidden, protocol.TargetBlocked},
		"metadata IPv6":                      {"[fd00:ec2::254]:80", http.StatusForbidden, protocol.TargetBlocked},
		"IPv4-mapped loopback on other port": {"[::ffff:127.0.0.1]:22", http.StatusForbidden, protocol.TargetBlocked},
		"NAT64 metadata":                     {"[64:ff9b::a9fe:a9fe]:80", http.StatusForbidden, protocol.TargetBlocked},
		"unspecified":                        {"0.0.0.0:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"unspecified IPv6":                   {"[::]:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"broadcast":                          {"255.255.255.255:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"multicast":                          {"224.0.0.1:" + p, http.StatusForbidden, protocol.TargetBlocked},
		"private address not listed":         {"10.1.2.3:443", http.StatusForbidden, protocol.AllowlistMissing},
		"name not listed":                    {"jira.corp.example:443", http.StatusForbidden, protocol.AllowlistMissing},
		"allowed name on another port":       {"demo.postern.test:1", http.StatusForbidden, protocol.AllowlistMissing},
	}
	// Request lines and Host headers that HTTP itself forbids are refused
	// by the proxy's HTTP layer with a plain 400, before Postern sees them.
	for name, target := range map[string]string{
		"port with plus sign": "127.0.0.1:+" + p,
		"userinfo in host":    "user@demo.postern.test:" + p,
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, http.StatusBadRequest, dialConnectNoFail(f.relay.proxyAddr, f.conn.ID, f.key, target))
		})
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := f.connect(t, tc.target)
			if tc.status == http.StatusOK {
				roundTrip(t, res, 1<<10)
				return
			}
			assertRefused(t, res, tc.status, tc.reason)
			assert.NotContains(t, res.body.Message, f.key, "the answer never echoes credentials")
		})
	}
}

func TestRevokeCutsOpenStreamsAndRefusesAfter(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)

	open := f.connect(t, f.target)
	require.Equal(t, http.StatusOK, open.status)
	_, err := open.conn.Write([]byte("partial request, never finished"))
	require.NoError(t, err)

	revoked, err := f.relay.admin.RevokeConnection(context.Background(), f.conn.ID)
	require.NoError(t, err)
	require.NotNil(t, revoked.RevokedAt)

	// The open stream is cut: the client sees the end within a second.
	_ = open.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, open.br)
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "stream still open 2s after revoke")
	assert.Less(t, time.Since(start), time.Second)

	assertRefused(t, f.connect(t, f.target), http.StatusForbidden, protocol.ConnectionRevoked)
	st, err := f.relay.admin.Status(context.Background(), f.conn.ID, "")
	require.NoError(t, err)
	assert.Equal(t, "revoked", st.TunnelStatus)
	assert.Equal(t, "revoked", st.AuthStatus)
	assert.Equal(t, protocol.ConnectionRevoked, st.Reason)
	assert.Empty(t, st.Agents, "no tunnel survives the revocation")
}

func TestAgentReturnsAfterRelayRestart(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	roundTrip(t, f.connect(t, f.target), 1<<10)

	f.relay.stop()
	restarted := startRelay(t, f.relay.dataDir, f.relay.apiAddr, f.relay.proxyAddr)
	f.relay = restarted
	waitStatus(t, restarted.admin, f.conn.ID, func(s api.Status) bool { return s.TunnelStatus == "connected" })
	roundTrip(t, f.connect(t, f.target), 1<<20)
}

// A relay that is told to stop closes its listeners, sends GoAway, and
// lets a stream that is already open finish before it exits.
func TestRelayStopDrainsOpenStreams(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	open := f.connect(t, f.target)
	require.Equal(t, http.StatusOK, open.status)
	first := []byte("the first half of a request, ")
	_, err := open.conn.Write(first)
	require.NoError(t, err)

	served := f.relay.shutdown()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", f.relay.proxyAddr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "a stopping relay takes no new connections")

	second := []byte("and the second half, sent while the relay drains")
	_, err = open.conn.Write(second)
	require.NoError(t, err)
	require.NoError(t, open.conn.(*net.TCPConn).CloseWrite())
	want := sha256.Sum256(append(first, second...))
	digest := make([]byte, sha256.Size)
	_, err = io.ReadFull(open.br, digest)
	require.NoError(t, err, "the open stream survives the relay's stop")
	assert.Equal(t, want[:], digest)
	_, err = io.Copy(io.Discard, open.br)
	require.NoError(t, err)

	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not exit after its last stream ended")
	}
}
