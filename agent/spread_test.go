package agent

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// clusterNode is one relay node of a cluster of n, as Welcome tells it.
func clusterNode(t *testing.T, id string, n int) *tunneltest.Relay {
	return tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: testkit.Token, Heartbeat: time.Second, NodeID: id, Nodes: n})
}

// tunnelNodes lists the node of each tunnel up, sorted.
func tunnelNodes(a *Agent) []string {
	var out []string
	for _, tn := range a.Status().Tunnels {
		out = append(out, tn.NodeID)
	}
	slices.Sort(out)
	return out
}

// Two tunnels whose first URLs reach the same node end on distinct nodes
// when the cluster has more than one.
func TestTunnelsSpreadOverNodes(t *testing.T) {
	a1, b := clusterNode(t, "node-a", 2), clusterNode(t, "node-b", 2)
	// Two names of node-a's address, as two DNS names of one load
	// balancer would be.
	other := strings.Replace(a1.URL(), "127.0.0.1", "localhost", 1)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: [%s, %s, %s]\ntunnels: 2\nallow: []\n", a1.URL(), other, b.URL()))
	a := runAgent(t, Options{Config: cfg})
	require.Eventually(t, func() bool { return slices.Equal(tunnelNodes(a), []string{"node-a", "node-b"}) },
		testkit.WaitTimeout, 10*time.Millisecond, "one tunnel on each node")
	assert.GreaterOrEqual(t, len(a1.Hellos()), 2, "a tunnel landed on the node another held, and was dialled elsewhere")
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, []string{"node-a", "node-b"}, tunnelNodes(a), "spread tunnels stay")
}

// A single relay that is not in a cluster takes both tunnels at once.
func TestTunnelsShareASingleNode(t *testing.T) {
	r := clusterNode(t, "node-a", 0)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 2\nallow: []\n", r.URL()))
	a := runAgent(t, Options{Config: cfg})
	require.Eventually(t, func() bool { return slices.Equal(tunnelNodes(a), []string{"node-a", "node-a"}) },
		testkit.WaitTimeout, 10*time.Millisecond)
	assert.Len(t, r.Hellos(), 2, "no tunnel was sent away")
}

// When the other nodes of the cluster cannot be reached, the tunnel
// settles on the node it can reach after MaxSameNodeTries tries.
func TestTunnelsSettleWhenOtherNodesAreDown(t *testing.T) {
	r := clusterNode(t, "node-a", 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: [%s, ws://%s]\ntunnels: 2\nallow: []\n", r.URL(), dead))
	a := runAgent(t, Options{Config: cfg})
	require.Eventually(t, func() bool { return slices.Equal(tunnelNodes(a), []string{"node-a", "node-a"}) },
		testkit.WaitTimeout, 10*time.Millisecond, "both tunnels on the one node that answers")
	hellos := len(r.Hellos())
	assert.LessOrEqual(t, hellos, 2+MaxSameNodeTries, "tunnels sent away from the held node are bounded")
	time.Sleep(200 * time.Millisecond)
	assert.Len(t, r.Hellos(), hellos, "a settled tunnel stays")
}

// A tunnel that settled on the node another holds, because the other node
// was down, moves to it once it is back: the slot tries again after
// RespreadAfter, and the stream open on the settled tunnel is not cut.
func TestTunnelsSpreadAgainWhenANodeComesBack(t *testing.T) {
	a1 := clusterNode(t, "node-a", 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gate := &gateListener{Listener: ln}
	b := tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: testkit.Token, Heartbeat: time.Second, NodeID: "node-b", Nodes: 2, Listener: gate})
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: [%s, %s]\ntunnels: 2\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		a1.URL(), b.URL(), tg.Port()))
	a := runAgent(t, Options{Config: cfg, RespreadAfter: 300 * time.Millisecond, DrainTimeout: time.Minute})
	require.Eventually(t, func() bool { return slices.Equal(tunnelNodes(a), []string{"node-a", "node-a"}) },
		testkit.WaitTimeout, 10*time.Millisecond, "both tunnels on the one node that answers")

	var st net.Conn
	for st == nil { // the settled tunnels are the ones still open
		if s := a1.Session(t); !s.Closed() {
			res, dialled := s.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
			require.True(t, res.OK, "%+v", res)
			st = dialled
		}
	}
	defer st.Close()
	require.Equal(t, "before", testkit.RoundTrip(t, st, "before"))

	gate.up.Store(true)
	require.Eventually(t, func() bool { return slices.Equal(tunnelNodes(a), []string{"node-a", "node-b"}) },
		testkit.WaitTimeout, 10*time.Millisecond, "a tunnel moved to the node that came back")
	assert.Equal(t, "after", testkit.RoundTrip(t, st, "after"), "the stream open on the settled tunnel still flows")
	time.Sleep(time.Second)
	assert.Equal(t, []string{"node-a", "node-b"}, tunnelNodes(a), "spread tunnels stay")
}

// gateListener refuses every connection until up is set, as a relay node
// that is down and then comes back on the same address.
type gateListener struct {
	net.Listener
	up atomic.Bool
}

func (l *gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.up.Load() {
			return c, err
		}
		_ = c.Close()
	}
}
