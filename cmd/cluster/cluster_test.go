package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// eventLog follows a node's event stream of one connection from its first
// event, so that nothing published before the stream opened is missed.
type eventLog struct {
	mu     sync.Mutex
	events []api.Event
}

func follow(c *clusterkit.Cluster, i int, connID string) *eventLog {
	l := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Client(i).ConnectionEvents(ctx, connID, "0", func(e api.Event) error {
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
			return nil
		})
	}()
	c.T.Cleanup(func() { cancel(); <-done })
	return l
}

func (l *eventLog) has(typ, to string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Type == typ && e.To == to {
			return true
		}
	}
	return false
}

// The product uses only node C; the agent's two tunnels are on A and B.
func TestAnyNodeServesAnyConnection(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	events := follow(c, 2, conn.ID)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "gitlab")
	}))
	t.Cleanup(web.Close)
	c.StartAgent(conn.AgentToken, []string{target, web.Listener.Addr().String()}, 2, 0, 1)

	var st api.Status
	testkit.WaitFor(t, 15*time.Second, "both tunnels, on A and B, seen from C", func() bool {
		var err error
		st, err = c.Status(2, conn.ID)
		return err == nil && len(clusterkit.TunnelNodes(st)) == 2
	})
	assert.ElementsMatch(t, []string{"node-a", "node-b"}, clusterkit.TunnelNodes(st), "each tunnel names its node")
	assert.Equal(t, "connected", st.TunnelStatus)
	assert.True(t, st.Ready)

	for range 10 {
		require.NoError(t, c.RoundTrip(2, conn.ID, target, 64<<10), "CONNECT through C, forwarded to A or B")
	}
	proxy := &url.URL{Scheme: "http", Host: c.Nodes[2].Proxy, User: url.UserPassword(conn.ID, c.AdminKey)}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
	resp, err := hc.Get(web.URL + "/api/v4/version")
	require.NoError(t, err, "a plain http:// request through C's proxy")
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "gitlab", resp.Header.Get("Server"), "the answer came from the web server behind the agent")

	check, err := c.Client(2).Check(t.Context(), conn.ID, web.URL)
	require.NoError(t, err, "a live check through C runs on the agent")
	assert.True(t, check.Ready, "the agent reached the web server: %+v", check.Steps)

	testkit.WaitFor(t, 5*time.Second, "the tunnel event published by A or B arrives on C", func() bool {
		return events.has(api.EventTunnel, "connected")
	})
}

// Revoking at C cuts a stream that runs through A, and every node says so.
func TestRevokeReachesEveryNode(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("jira")
	c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	testkit.WaitFor(t, 15*time.Second, "the tunnel on A", func() bool {
		st, err := c.Status(2, conn.ID)
		return err == nil && len(clusterkit.TunnelNodes(st)) == 1
	})
	stream, err := c.Open(0, conn.ID, target)
	require.NoError(t, err)
	defer stream.Close()
	_, err = stream.Write([]byte("ping"))
	require.NoError(t, err)

	_, err = c.Client(2).RevokeConnection(t.Context(), conn.ID)
	require.NoError(t, err)
	start := time.Now()
	_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for err == nil {
		_, err = stream.Read(buf)
	}
	cut := time.Since(start)
	t.Logf("the stream through A was cut %s after the revocation at C", cut.Round(time.Millisecond))
	assert.Less(t, cut, 2*time.Second, "revocation cuts a stream on another node within 2 s")
	for i := range c.Nodes {
		st, err := c.Status(i, conn.ID)
		require.NoError(t, err)
		assert.Equal(t, "CONNECTION_REVOKED", string(st.Reason), c.Nodes[i].ID)
		assert.Equal(t, "revoked", st.TunnelStatus, c.Nodes[i].ID)
	}
}

// With certificates every listener of every node speaks TLS, peer links
// too (wss://), and forwarding works the same.
func TestPeerLinksOverTLS(t *testing.T) {
	c := clusterkit.NewTLS(t, 2)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	c.WaitTunnels(1, conn.ID, "node-a")
	require.NoError(t, c.RoundTrip(1, conn.ID, target, 256<<10), "CONNECT through B, forwarded over wss:// to A")
	nodes, err := c.Client(1).Nodes(t.Context())
	require.NoError(t, err)
	require.Len(t, nodes.Nodes, 2)
	for _, n := range nodes.Nodes {
		assert.True(t, strings.HasPrefix(n.PeerURL, "wss://"), n.PeerURL)
	}
}

// An agent refused at A for a wrong token makes the connection's auth
// failing on every node, and a CONNECT at C says why.
func TestAuthFailureSeenEverywhere(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	wrong := testkit.WrongSecret(t, conn.AgentToken) // well formed, not this connection's
	secret := testkit.SecretOf(wrong)
	events := follow(c, 2, conn.ID)
	// Two tunnels, refused together: auth is failing from the second
	// refusal on.
	c.StartAgent(wrong, []string{target}, 2, 0)

	testkit.WaitFor(t, 10*time.Second, "auth failing on C", func() bool {
		st, err := c.Status(2, conn.ID)
		return err == nil && st.AuthStatus == "failing" && st.Reason == "AGENT_AUTH_FAILED"
	})
	status, reason := c.ConnectStatus(2, conn.ID, target)
	assert.Equal(t, http.StatusBadGateway, status)
	assert.Equal(t, "AGENT_AUTH_FAILED", reason)
	testkit.WaitFor(t, 5*time.Second, "the auth event published by A arrives on C", func() bool {
		return events.has(api.EventAuth, "failing")
	})
	assert.NotContains(t, c.Nodes[0].Proc.Output(), secret, "the presented secret is never logged")
}
