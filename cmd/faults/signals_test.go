package faults

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// assertRecovered checks that streams flow again once a stopped process
// runs on, and that the relay, sampled for 3 s, never shows more than one
// agent with its two live tunnels: why says which tunnels are gone.
func (s *system) assertRecovered(t *testing.T, why string) {
	t.Helper()
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
	var tunnels, agents int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		st := s.relay.status(t, s.connID)
		tunnels = max(tunnels, agentTunnels(st))
		agents = max(agents, len(st.Agents))
	}
	assert.Equal(t, 2, tunnels, why)
	assert.Equal(t, 1, agents)
}

// A stopped agent process is a silent peer: the relay drops its tunnels
// within the dead-peer budget and refuses streams at once; after SIGCONT
// the agent reconnects and only its new tunnels remain.
func TestFaultAgentSIGSTOP(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{})
	require.NoError(t, s.roundTrip(64<<10, 10*time.Second))
	before := s.relay.status(t, s.connID)

	// A pause shorter than the keepalive's patience costs nothing.
	a.Signal(t, syscall.SIGSTOP)
	time.Sleep(3 * time.Second)
	a.Signal(t, syscall.SIGCONT)
	require.NoError(t, s.roundTrip(64<<10, 10*time.Second))
	brief := s.relay.status(t, s.connID)
	require.Len(t, brief.Agents, 1)
	assert.Equal(t, before.Agents[0].ConnectedAt, brief.Agents[0].ConnectedAt, "a 3 s pause keeps the tunnels")

	a.Signal(t, syscall.SIGSTOP)
	noticed := testkit.WaitFor(t, 25*time.Second, "relay drops the stopped agent's tunnels", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && st.TunnelStatus == "disconnected"
	})
	assert.LessOrEqual(t, noticed, deadPeerBudget, "relay notices a stopped agent")
	_, err := s.connect(s.echo, 5*time.Second)
	var refused *refusedError
	require.ErrorAs(t, err, &refused, "a stopped agent's connection is refused at once")
	assert.Equal(t, http.StatusBadGateway, refused.status)
	assert.Equal(t, "AGENT_OFFLINE", refused.reason)

	a.Signal(t, syscall.SIGCONT)
	back := s.waitConnected(t, 20*time.Second)
	s.assertRecovered(t, "only the agent's new tunnels remain on the relay")
	t.Logf("agent SIGSTOP: 3s pause kept the tunnels; relay dropped them %s into a long stop; connected again %s after SIGCONT",
		noticed.Round(time.Millisecond), back.Round(time.Millisecond))
}

// A stopped relay process is a silent peer for the agent: it notices
// within the dead-peer budget; after SIGCONT the tunnels come back and the
// relay keeps only the live ones.
func TestFaultRelaySIGSTOP(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{})
	require.NoError(t, s.roundTrip(64<<10, 10*time.Second))

	s.relay.Signal(t, syscall.SIGSTOP)
	noticed := testkit.WaitFor(t, 25*time.Second, "agent reports its tunnels down", func() bool { return a.tunnelsUp() == 0 })
	assert.LessOrEqual(t, noticed, deadPeerBudget, "agent notices a stopped relay")

	s.relay.Signal(t, syscall.SIGCONT)
	back := testkit.WaitFor(t, 40*time.Second, "agent has both tunnels up", func() bool { return a.tunnelsUp() == 2 })
	s.waitConnected(t, 10*time.Second)
	s.assertRecovered(t, "the relay dropped the tunnels the agent gave up")
	t.Logf("relay SIGSTOP: agent noticed after %s; both tunnels up %s after SIGCONT",
		noticed.Round(time.Millisecond), back.Round(time.Millisecond))
}

// kill -9 of the relay while clients keep making requests: restarted on
// the same data directory and ports, it gets its agent back within the
// reconnect budget (p50 <= 2 s once it listens) and requests flow again.
func TestFaultRelayKill9UnderLoad(t *testing.T) {
	s := newSystem(t)
	s.startAgent(t, agentOptions{})
	// The loaders use their own copy: s.relay changes on every restart,
	// while the proxy address they need does not.
	clients := *s
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	loads := make([]*loadLoop, 4)
	for i := range loads {
		loads[i] = &loadLoop{}
		wg.Go(func() { loads[i].run(ctx, &clients, 16<<10) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	testkit.WaitFor(t, 10*time.Second, "every loader succeeds once", func() bool {
		for _, l := range loads {
			if ok, _, _ := l.counts(); ok == 0 {
				return false
			}
		}
		return true
	})

	const restarts = 5
	var sinceListen, sinceKill []time.Duration
	for range restarts {
		s.relay.Kill()
		killed := time.Now()
		s.relay = startRelay(t, s.relay.dataDir, s.relay.apiAddr, s.relay.proxyAddr)
		d := s.waitConnected(t, 20*time.Second)
		sinceListen = append(sinceListen, d)
		sinceKill = append(sinceKill, time.Since(killed))
		connected := time.Now()
		testkit.WaitFor(t, 10*time.Second, "load flows again after the restart", func() bool {
			for _, l := range loads {
				if _, _, last := l.counts(); !last.After(connected) {
					return false
				}
			}
			return true
		})
	}
	cancel()
	wg.Wait()
	var ok, failed int
	for _, l := range loads {
		o, f, _ := l.counts()
		ok, failed = ok+o, failed+f
	}
	p50 := median(sinceListen)
	assert.LessOrEqual(t, p50, 2*time.Second, "p50 reconnect after the relay listens again")
	t.Logf("relay kill -9 x%d under 4 request loops: reconnect after listening %v (p50 %s, max %s); after kill %v; requests ok %d, failed during outages %d",
		restarts, rounded(sinceListen), p50.Round(time.Millisecond), slices.Max(sinceListen).Round(time.Millisecond),
		rounded(sinceKill), ok, failed)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
