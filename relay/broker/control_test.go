package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// An idle tunnel costs the relay its multiplexer's receive loop and no
// goroutine of the broker's: the control stream is read only while frames
// arrive. With a thousand agents of two tunnels each, a goroutine's stack
// per tunnel is a large part of the relay's memory.
func TestAnIdleTunnelHoldsNoBrokerGoroutine(t *testing.T) {
	// Not parallel: the test counts the process's goroutines.
	b, err := New(Config{NodeID: "node-a", HeartbeatInterval: time.Hour, HandshakeTimeout: waitFor,
		MaxStreamsPerTunnel: 8, Tunnel: tunnel.DefaultConfig()}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(b.Close)

	const n = 20
	before := runtime.NumGoroutine()
	ended := make(chan struct{}, n)
	agents := make([]*tunnel.Session, n)
	for i := range agents {
		relayEnd, agentEnd := net.Pipe()
		b.Serve(relayEnd, Identity{ConnectionID: "c1", Remote: "pipe"}, func() { ended <- struct{}{} })
		tun, err := tunnel.Client(agentEnd, tunnel.DefaultConfig())
		require.NoError(t, err)
		t.Cleanup(func() { _ = tun.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		h := goodHello()
		h.AgentID = fmt.Sprintf("agent-%d", i)
		_, err = tun.Hello(ctx, h)
		cancel()
		require.NoError(t, err)
		agents[i] = tun
	}
	require.Eventually(t, func() bool { return len(b.All()) == n }, waitFor, time.Millisecond)

	// Each tunnel runs two receive loops here, the agent's and the
	// relay's, both in this process. The handshakes' goroutines are gone.
	// (require.Eventually would run its condition on a goroutine of
	// its own.)
	extra := runtime.NumGoroutine() - before
	for deadline := time.Now().Add(waitFor); extra > 2*n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		extra = runtime.NumGoroutine() - before
	}
	require.LessOrEqual(t, extra, 2*n, "goroutines for %d idle tunnels", n)

	// Health is still recorded, and a frame of a type this relay does
	// not know skipped.
	keep := agents[0]
	require.NoError(t, keep.Send(protocol.FrameType(200), map[string]string{"future": "field"}, waitFor))
	require.NoError(t, keep.Send(protocol.FrameHealth, goodHealth(), waitFor))
	var kept *Session
	for _, s := range b.All() {
		if s.Hello.AgentID == "agent-0" {
			kept = s
		}
	}
	require.NotNil(t, kept)
	require.Eventually(t, func() bool { _, at := kept.Health(); return !at.IsZero() }, waitFor, time.Millisecond,
		"the relay never recorded the Health")
	h, _ := kept.Health()
	assert.Equal(t, goodHealth().Version, h.Version)

	// The agents hang up: the relay notices without a reader parked on
	// each control stream, and says so to whoever waits (Serve's done).
	for _, a := range agents {
		_ = a.Close()
	}
	for range n {
		select {
		case <-ended:
		case <-time.After(waitFor):
			t.Fatal("the relay did not notice an agent hang up")
		}
	}
	assert.Empty(t, b.All())
}

// startWatch is an observer that records, when a session is starting,
// whether a stream could already be routed to it.
type startWatch struct {
	b        *Broker
	routable chan bool
}

func (w *startWatch) SessionStarting(_ context.Context, s *Session) {
	for _, c := range w.b.Candidates(s.ConnectionID) {
		if c == s {
			w.routable <- true
			return
		}
	}
	w.routable <- false
}
func (*startWatch) SessionUp(context.Context, *Session) error        { return nil }
func (*startWatch) SessionHealth(*Session, protocol.Allowlist)       {}
func (*startWatch) SessionSeen(context.Context, *Session, time.Time) {}
func (*startWatch) SessionDown(*Session)                             {}

// What a Starter records (the status keeper: that the connection has
// connected) is in place before any stream can be routed to the tunnel,
// so a CONNECT refused right after never finds the connection
// "never connected".
func TestAStarterHearsOfASessionBeforeItCanTakeStreams(t *testing.T) {
	t.Parallel()
	w := &startWatch{routable: make(chan bool, 1)}
	b, err := New(Config{NodeID: "node-a", HeartbeatInterval: time.Hour, HandshakeTimeout: waitFor,
		MaxStreamsPerTunnel: 8, Tunnel: tunnel.DefaultConfig()}, slog.New(slog.DiscardHandler), w)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	w.b = b

	relayEnd, agentEnd := net.Pipe()
	b.Serve(relayEnd, Identity{ConnectionID: "c1", Remote: "pipe"}, nil)
	tun, err := tunnel.Client(agentEnd, tunnel.DefaultConfig())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tun.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err = tun.Hello(ctx, goodHello())
	require.NoError(t, err)
	select {
	case routable := <-w.routable:
		assert.False(t, routable, "told only once no stream can reach the session yet")
	case <-time.After(waitFor):
		t.Fatal("the starter was not told of the session")
	}
	require.Eventually(t, func() bool { return len(b.Candidates("c1")) == 1 }, waitFor, time.Millisecond,
		"the session is registered after")
}
