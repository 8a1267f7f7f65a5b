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
	sent := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(res.conn, sent), io.LimitReader(testkit.NewPattern(3), n))
		if err == nil {
			err = res.conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		writeErr <- err
	}()
	digest := make([]byte, sha256.Size)
	_, err := io.ReadFull(res.br, digest)
	require.NoError(t, err)
	require.NoError(t, <-writeErr)
	assert.Equal(t, sent.Sum(nil), digest, "target saw exactly the bytes sent")

	got, want := sha256.New(), sha256.New()
	m, err := io.Copy(got, res.br)
	require.NoError(t, err)
	_, _ = io.Copy(want, io.LimitReader(testkit.NewPattern(testkit.EchoSeed), n))
	assert.Equal(t, n, m, "bytes back from the target")
	assert.Equal(t, want.Sum(nil), got.Sum(nil), "bytes back match")
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
