package cluster

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/faultlink"
	"github.com/postern/postern/cmd/internal/testkit"
)

// kill -9 of node A under load: requests through C go on via B, A's
// presence lapses within its lease, and nothing fails 2 s after the kill.
func TestKillNodeUnderLoad(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("github")
	c.StartAgent(conn.AgentToken, []string{target}, 2, 0, 1)
	c.WaitTunnels(2, conn.ID, "node-a", "node-b")

	load := startLoad(c, 4, conn.ID, target, func(uint64) int { return 2 })
	time.Sleep(time.Second)
	killed := time.Now()
	c.Kill(0)
	gone := testkit.WaitFor(t, 10*time.Second, "A's tunnel gone from C's status", func() bool {
		st, err := c.Status(2, conn.ID)
		return err == nil && !slices.Contains(clusterkit.TunnelNodes(st), "node-a")
	})
	time.Sleep(3 * time.Second)
	load.stop()

	lease := 3 * clusterkit.Heartbeat
	t.Logf("A's presence was gone from C %s after the kill (lease %s)", gone.Round(time.Millisecond), lease)
	assert.LessOrEqual(t, gone, lease+clusterkit.Heartbeat, "a dead node's tunnels lapse with its lease")
	early, earlyTotal := load.failures(killed)
	late, lateTotal := load.failures(killed.Add(2 * time.Second))
	t.Logf("requests through C from the kill on: %d, failed %d; from 2 s after: %d, failed %d",
		earlyTotal, len(early), lateTotal, len(late))
	report(t, late)
	assert.Empty(t, late, "no request fails 2 s after a node died")
	assert.Greater(t, lateTotal, 20, "the load ran")
	// The agent is degraded until its second tunnel settles on B, the
	// one node in its list that answers.
	settled := testkit.WaitFor(t, 30*time.Second, "both tunnels on B, connected", func() bool {
		st, err := c.Status(2, conn.ID)
		return err == nil && st.TunnelStatus == "connected" && slices.Equal(clusterkit.TunnelNodes(st), []string{"node-b", "node-b"})
	})
	t.Logf("both tunnels on B %s after A's were gone", settled.Round(time.Millisecond))
}

// A node cut off from PostgreSQL says RELAY_UNAVAILABLE where it cannot
// decide, goes unready, and comes back by itself when the database does.
func TestNodePartitionedFromDatabase(t *testing.T) {
	c := clusterkit.NewWith(t, 3, func(i int, nd *clusterkit.Node, db string) {
		if i == 2 {
			nd.Link = faultlink.New(t, clusterkit.HostOf(t, db))
			nd.ExtraEnv = append(nd.ExtraEnv, "POSTERN_DATABASE_URL="+clusterkit.WithHost(t, db, nd.Link.Addr))
		}
	})
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	c.WaitTunnels(2, conn.ID, "node-a")
	require.NoError(t, c.RoundTrip(2, conn.ID, target, roundTripSize))
	onC := c.CreateConnection("jira") // its tunnel is on C, and it is revoked while C cannot hear it
	c.StartAgent(onC.AgentToken, []string{target}, 1, 2)
	c.WaitTunnels(0, onC.ID, "node-c")

	c.Nodes[2].Link.Cut()
	testkit.WaitFor(t, 10*time.Second, "C unready", func() bool {
		return !testkit.GetOK(http.DefaultClient, "http://"+c.Nodes[2].API+"/readyz")
	})
	_, reason := c.ConnectStatus(2, conn.ID, target)
	assert.Equal(t, "RELAY_UNAVAILABLE", reason, "C cannot tell where the tunnel is")
	_, err := c.Status(2, conn.ID)
	assert.ErrorContains(t, err, "RELAY_UNAVAILABLE", "C's API cannot answer for the cluster")
	require.NoError(t, c.RoundTrip(0, conn.ID, target, roundTripSize), "the other nodes are not affected")
	require.NoError(t, c.RoundTrip(1, conn.ID, target, roundTripSize), "the other nodes are not affected")
	_, err = c.Client(0).RevokeConnection(t.Context(), onC.ID)
	require.NoError(t, err)

	c.Nodes[2].Link.Heal(t)
	back := testkit.WaitFor(t, 30*time.Second, "C ready again", func() bool {
		return testkit.GetOK(http.DefaultClient, "http://"+c.Nodes[2].API+"/readyz")
	})
	t.Logf("C was ready again %s after the database came back", back.Round(time.Millisecond))
	require.NoError(t, c.RoundTrip(2, conn.ID, target, roundTripSize), "C forwards again")
	nodes, err := c.Client(0).Nodes(t.Context())
	require.NoError(t, err)
	var ids []string
	for _, n := range nodes.Nodes {
		ids = append(ids, n.ID)
	}
	assert.Contains(t, ids, "node-c", "C registered itself again")
	cut := testkit.WaitFor(t, 15*time.Second, "C cuts the tunnel of the connection revoked while it could not hear", func() bool {
		return strings.Contains(c.Nodes[2].Proc.Output(), "connection revoked while the cluster was out of reach")
	})
	t.Logf("C cut the revoked connection's tunnel %s after it was ready again", cut.Round(time.Millisecond))
}
