package cluster

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// An API key revoked on one node loses its proxy stream on a second node
// and its event stream on a third within 2 s.
func TestAPIKeyRevocationReachesEveryNode(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("jira")
	key, err := c.Client(0).CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "product", Workspace: conn.Workspace})
	require.NoError(t, err)
	c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	// Seen from B, the node the stream goes through: A shows its own
	// tunnel a moment before the cluster's record of it is written.
	c.WaitTunnels(1, conn.ID, c.Nodes[0].ID)

	stream, err := c.OpenAs(1, conn.ID, key.Key, target)
	require.NoError(t, err)
	defer stream.Close()
	_, err = stream.Write([]byte("ping"))
	require.NoError(t, err)
	events := testkit.FollowEvents(t, "http://"+c.Nodes[0].API+"/v1/events", key.Key)

	start := time.Now()
	_, err = c.Client(2).RevokeAPIKey(t.Context(), key.ID)
	require.NoError(t, err)
	_ = stream.SetReadDeadline(start.Add(5 * time.Second))
	buf := make([]byte, 64)
	for err == nil {
		_, err = stream.Read(buf)
	}
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the stream through B outlived the revocation at C by 5 s")
	cut := time.Since(start)
	select {
	case <-events:
	case <-time.After(time.Until(start.Add(2 * time.Second))):
		t.Fatal("the event stream on A still open 2 s after the revocation at C")
	}
	t.Logf("the key's stream through B was cut %s, its events on A by %s, after the revocation at C",
		cut.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	assert.Less(t, cut, 2*time.Second, "revocation cuts a key's stream on another node within 2 s")

	for i := range c.Nodes {
		_, err := c.OpenAs(i, conn.ID, key.Key, target)
		require.Error(t, err, c.Nodes[i].ID)
		assert.True(t, strings.Contains(err.Error(), "PROXY_AUTH_REQUIRED"), "%s: %v", c.Nodes[i].ID, err)
	}
	require.NoError(t, c.RoundTrip(1, conn.ID, target, 1<<10), "the admin key still works")
}
