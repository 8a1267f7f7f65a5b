package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
)

// Every node is restarted in turn (SIGTERM, wait for exit, start, wait
// until ready) while a client sends a steady stream of CONNECTs round
// robin over the nodes in rotation, as a load balancer checking /readyz
// would: no request fails.
func TestRollingRestartFailsNothing(t *testing.T) {
	// Each node keeps serving for a while after /readyz turns unready,
	// long enough for the load balancer's health check to notice.
	c := clusterkit.NewWith(t, 3, func(_ int, nd *clusterkit.Node, _ string) {
		nd.ExtraYAML = fmt.Sprintf("shutdown_delay: %s\n", (healthFall+2)*healthEvery)
	})
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("jira")
	c.StartAgent(conn.AgentToken, []string{target}, 2, 0, 1, 2)
	testkit.WaitFor(t, 15*time.Second, "two tunnels on distinct nodes", func() bool {
		st, err := c.Status(0, conn.ID)
		nodes := clusterkit.TunnelNodes(st)
		return err == nil && len(nodes) == 2 && nodes[0] != nodes[1]
	})

	start := time.Now()
	load := startLoad(c, 4, conn.ID, target, func(n uint64) int { return int(n % 3) })
	time.Sleep(time.Second)
	for i := range c.Nodes {
		began := time.Now()
		c.Stop(i)
		stopped := time.Since(began)
		c.Start(i)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := c.Status(i, conn.ID)
			nodes := clusterkit.TunnelNodes(st)
			if err == nil && st.TunnelStatus == "connected" && len(nodes) == 2 && nodes[0] != nodes[1] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent not back to two tunnels on distinct nodes within 30 s; %s says %s, tunnels on %v, err %v",
					c.Nodes[i].ID, st.TunnelStatus, nodes, err)
			}
		}
		t.Logf("%s: stopped in %s, back with the agent's tunnels spread %s after the SIGTERM",
			c.Nodes[i].ID, stopped.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	load.stop()

	failed, total := load.failures(start)
	t.Logf("rolling restart of 3 nodes in %s: %d requests, %d failed", time.Since(start).Round(100*time.Millisecond), total, len(failed))
	report(t, failed)
	assert.Empty(t, failed, "no request fails during a rolling restart")
	assert.Greater(t, total, 100, "the load ran")
}
