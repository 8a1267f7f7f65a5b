package faults

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/faultlink"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// deadPeerBudget is the design's bound for noticing a silent peer
// (yamux keepalive every 5 s, a ping unanswered for 10 s ends the
// session), plus a second for polling and scheduling.
const deadPeerBudget = 16 * time.Second

// A 200 ms delay each way between agent and relay slows streams down but
// neither breaks them nor passes for a dead peer.
func TestFaultLinkLatency(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	s.startAgent(t, agentOptions{relays: []string{l.Addr}})
	before := s.relay.status(t, s.connID)
	l.Add(t, faultlink.Both("latency", map[string]any{"latency": 200})...)

	start := time.Now()
	require.NoError(t, s.roundTrip(1<<10, 30*time.Second))
	small := time.Since(start)
	start = time.Now()
	require.NoError(t, s.roundTrip(1<<20, 60*time.Second))
	large := time.Since(start)

	// Opening a stream costs at least one round trip over the link.
	assert.GreaterOrEqual(t, small, 400*time.Millisecond, "the latency toxic was in the path")
	after := s.relay.status(t, s.connID)
	assert.Equal(t, "connected", after.TunnelStatus)
	require.Len(t, after.Agents, 1)
	assert.Equal(t, before.Agents[0].ConnectedAt, after.Agents[0].ConnectedAt, "no tunnel was dropped and redialled")
	t.Logf("latency 200ms each way: 1 KiB round trip %s, 1 MiB round trip %s, tunnels kept", small, large)
}

// A link that resets every connection ends the tunnels and the streams on
// them at once; when it heals the agent is back within its backoff.
func TestFaultLinkResetPeer(t *testing.T) {
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	a := s.startAgent(t, agentOptions{relays: []string{l.Addr}})
	open, err := s.connect(s.echo, 10*time.Second)
	require.NoError(t, err)
	defer open.Close()
	_, err = open.Write([]byte("the first half of a request"))
	require.NoError(t, err)

	// The stream that is open when the link starts resetting ends with an
	// error; it does not hang.
	streamEnded := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_ = open.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err := io.Copy(io.Discard, open)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			streamEnded <- -1
			return
		}
		streamEnded <- time.Since(start)
	}()

	resets := faultlink.Both("reset_peer", map[string]any{"timeout": 0})
	l.Add(t, resets...)
	// The next byte on a connection resets it: the open stream's at once,
	// keepalive pings on the other tunnel within 5 s.
	_, _ = open.Write([]byte(", and the second"))
	down := testkit.WaitFor(t, 10*time.Second, "agent reports its tunnels down", func() bool { return a.tunnelsUp() == 0 })
	ended := <-streamEnded
	require.NotEqual(t, time.Duration(-1), ended, "a stream on a reset tunnel ends, it does not hang")
	assert.Less(t, ended, time.Second, "the open stream ends as soon as its tunnel is reset")

	l.Remove(t, resets...)
	back := s.waitConnected(t, 20*time.Second)
	// The attempts that failed while the link was resetting (about 5 s)
	// put the backoff ceiling at 4-8 s; a healed link is used at the next
	// attempt.
	assert.LessOrEqual(t, back, 8*time.Second, "reconnect after the link healed")
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
	t.Logf("reset_peer: open stream ended after %s, agent saw both tunnels down after %s, connected again %s after the link healed",
		ended.Round(time.Millisecond), down.Round(time.Millisecond), back.Round(time.Millisecond))
}

// A link that carries nothing and closes nothing (a black hole) is noticed
// by both ends within the dead-peer budget; when it heals, the tunnels
// come back and carry streams.
func TestFaultLinkSilent(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	a := s.startAgent(t, agentOptions{relays: []string{l.Addr}})

	silence := faultlink.Both("timeout", map[string]any{"timeout": 0})
	l.Add(t, silence...)
	start := time.Now()
	var agentNoticed, relayDegraded, relayNoticed time.Duration
	for (agentNoticed == 0 || relayNoticed == 0) && time.Since(start) < 25*time.Second {
		if agentNoticed == 0 && a.tunnelsUp() == 0 {
			agentNoticed = time.Since(start)
		}
		if st, err := s.relay.tryStatus(s.connID); err == nil {
			if relayDegraded == 0 && st.TunnelStatus != "connected" {
				relayDegraded = time.Since(start)
			}
			if relayNoticed == 0 && st.TunnelStatus == "disconnected" {
				relayNoticed = time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NotZero(t, agentNoticed, "the agent never noticed the silent link")
	require.NotZero(t, relayNoticed, "the relay never noticed the silent link")
	assert.LessOrEqual(t, agentNoticed, deadPeerBudget, "agent notices a silent relay")
	assert.LessOrEqual(t, relayNoticed, deadPeerBudget, "relay notices a silent agent")

	// While the agent is unreachable a CONNECT is refused at once.
	_, err := s.connect(s.echo, 5*time.Second)
	var refused *refusedError
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, http.StatusBadGateway, refused.status)
	assert.Equal(t, "AGENT_OFFLINE", refused.reason)

	l.Remove(t, silence...)
	back := s.waitConnected(t, 45*time.Second)
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
	t.Logf("silent link: agent noticed after %s, relay degraded after %s and disconnected after %s; connected again %s after the link healed",
		agentNoticed.Round(time.Millisecond), relayDegraded.Round(time.Millisecond), relayNoticed.Round(time.Millisecond),
		back.Round(time.Millisecond))
}

// A link that cuts the byte stream into tiny pieces changes nothing the
// ends can see: every stream arrives whole and in order.
func TestFaultLinkSlicer(t *testing.T) {
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	s.startAgent(t, agentOptions{relays: []string{l.Addr}})
	l.Add(t, faultlink.Both("slicer", map[string]any{"average_size": 48, "size_variation": 40, "delay": 0})...)

	sizes := map[string]int64{"1 byte": 1, "odd size": 12345, "256 KiB": 256 << 10, "1 MiB": 1 << 20}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(map[string]error, len(sizes))
	var mu sync.Mutex
	for name, n := range sizes {
		wg.Go(func() {
			err := s.roundTrip(n, 60*time.Second)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	for name := range sizes {
		assert.NoError(t, errs[name], name)
	}
	assert.Equal(t, "connected", s.relay.status(t, s.connID).TunnelStatus)
	t.Logf("slicer (8-88 byte pieces): %d concurrent streams, checksums match, %s", len(sizes), time.Since(start).Round(time.Millisecond))
}

// forwarder is a TCP relay on loopback whose current connections can be
// frozen: from then on it forwards nothing either way and closes nothing,
// like a path whose NAT state was lost. Connections made after a freeze
// are forwarded normally.
type forwarder struct {
	addr string
	mu   sync.Mutex
	// pairs are the connections being forwarded or held frozen.
	pairs [][2]net.Conn
	wg    sync.WaitGroup
}

func newForwarder(t *testing.T, upstream string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &forwarder{addr: ln.Addr().String()}
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for _, p := range f.pairs {
			_ = p[0].Close()
			_ = p[1].Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	f.wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				_ = down.Close()
				continue
			}
			f.mu.Lock()
			f.pairs = append(f.pairs, [2]net.Conn{down, up})
			f.mu.Unlock()
			f.wg.Go(func() { pump(up, down) })
			f.wg.Go(func() { pump(down, up) })
		}
	})
	return f
}

// pump copies src to dst. A frozen pair's read deadline stops it without
// closing anything; any other end closes both.
func pump(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	_ = dst.Close()
	_ = src.Close()
}

// freeze stops forwarding on every current connection and keeps them
// open.
func (f *forwarder) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	past := time.Unix(1, 0)
	for _, p := range f.pairs {
		_ = p[0].SetReadDeadline(past)
		_ = p[1].SetReadDeadline(past)
	}
}

// When an agent comes back while the relay still holds its tunnels from
// before (the old path went silent without closing), the relay asks the
// old process's tunnels for a sign of life (a ping of 3 s at most, so as
// not to cut a second live process with the same agent_id), and closes
// them when none comes: not after the keepalive gives up on them.
func TestFaultNewestSessionWins(t *testing.T) {
	s := newSystem(t)
	f := newForwarder(t, s.relay.apiAddr)
	old := s.startAgent(t, agentOptions{relays: []string{f.addr}})
	f.freeze()
	old.Kill() // the old machine is gone; its tunnels' FIN never reaches the relay

	frozeAt := time.Now()
	fresh := s.launchAgent(t, agentOptions{})
	testkit.WaitFor(t, 10*time.Second, "the new agent is up", func() bool { return fresh.tunnelsUp() == 2 })
	var st api.Status
	gone := testkit.WaitFor(t, 10*time.Second, "only the new agent's tunnels remain", func() bool {
		st = s.relay.status(t, s.connID)
		return agentTunnels(st) == 2 && len(st.Agents) == 1
	})
	t.Logf("the old process's silent tunnels were closed %s after the new agent was up, %s after the old path froze",
		gone.Round(time.Millisecond), time.Since(frozeAt).Round(time.Millisecond))
	assert.Less(t, gone, 5*time.Second, "closed after the ping, not after the keepalive (15 s)")
	// Streams go to the live tunnels only; one sent to a silent old
	// tunnel would wait for the relay's open timeout (15 s).
	for i := range 8 {
		assert.NoError(t, s.roundTrip(4<<10, 5*time.Second), "stream %d", i)
	}
	lingered := testkit.WaitFor(t, 20*time.Second, "old tunnels gone from the relay", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && agentTunnels(st) == 2
	})
	t.Logf("newest session wins: old tunnels lingered %s after the new agent was up", lingered.Round(time.Millisecond))
}
