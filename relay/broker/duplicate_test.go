package broker

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// waitFor bounds how long a test waits for something that should happen
// at once; it only turns a hang into a failure.
const waitFor = 20 * time.Second

// frozenConn is an agent's end of a tunnel whose machine vanished: once
// frozen it reads nothing more and what it writes is lost, so the relay's
// pings go unanswered.
type frozenConn struct {
	net.Conn
	once   sync.Once
	frozen chan struct{}
	closed chan struct{}
}

func newFrozenConn(c net.Conn) *frozenConn {
	return &frozenConn{Conn: c, frozen: make(chan struct{}), closed: make(chan struct{})}
}

func (c *frozenConn) freeze() { close(c.frozen) }

func (c *frozenConn) Read(p []byte) (int, error) {
	select {
	case <-c.frozen:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Read(p)
	}
}

func (c *frozenConn) Write(p []byte) (int, error) {
	select {
	case <-c.frozen:
		return len(p), nil
	default:
		return c.Conn.Write(p)
	}
}

func (c *frozenConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// testAgent is one agent tunnel to a broker over an in-memory pipe.
type testAgent struct {
	tun  *tunnel.Session
	conn *frozenConn
	sess *Session // the broker's side, once registered
}

func newTestBroker(t *testing.T) *Broker {
	t.Helper()
	b, err := New(Config{NodeID: "node-a", HeartbeatInterval: time.Hour, HandshakeTimeout: waitFor,
		MaxStreamsPerTunnel: 8, Tunnel: tunnel.DefaultConfig()}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// connect opens one tunnel of an agent process to b and waits until b has
// registered it.
func connect(t *testing.T, b *Broker, hello protocol.Hello) *testAgent {
	t.Helper()
	relayEnd, agentEnd := net.Pipe()
	a := &testAgent{conn: newFrozenConn(agentEnd)}
	go func() { _ = b.Accept(relayEnd, Identity{ConnectionID: "c1", Remote: "pipe"}) }()
	tun, err := tunnel.Client(a.conn, tunnel.DefaultConfig())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tun.Close(); _ = a.conn.Close() })
	a.tun = tun
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	w, err := tun.Hello(ctx, hello)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, s := range b.All() {
			if s.ID == w.SessionID {
				a.sess = s
				return true
			}
		}
		return false
	}, waitFor, time.Millisecond, "session %s never registered", w.SessionID)
	return a
}

// nextNotice reads control frames until a Notice arrives.
func (a *testAgent) nextNotice(t *testing.T) protocol.Notice {
	t.Helper()
	for {
		f, err := a.tun.Recv(waitFor)
		require.NoError(t, err)
		if f.Type != protocol.FrameNotice {
			continue
		}
		var n protocol.Notice
		require.NoError(t, f.Decode(protocol.FrameNotice, &n))
		return n
	}
}

func process(instance string, started time.Time) protocol.Hello {
	h := goodHello()
	h.Tunnels, h.InstanceID, h.StartedAt = 1, instance, started
	return h
}

func TestRegistryTellsARestartFromAnotherProcess(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := map[string]struct {
		first, second         protocol.Hello
		wantStale, wantOthers bool
	}{
		"the same process reconnects":          {first: process("p1", t0), second: process("p1", t0), wantStale: true},
		"another process with the same id":     {first: process("p1", t0), second: process("p2", t0), wantOthers: true},
		"an older agent restarted":             {first: process("", t0), second: process("", t0.Add(time.Minute)), wantOthers: true},
		"an older agent's same process":        {first: process("", t0), second: process("", t0), wantStale: true},
		"another agent id is none of its kind": {first: process("p1", t0), second: func() protocol.Hello { h := process("p2", t0); h.AgentID = "other"; return h }()},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := newTestBroker(t)
			first := connect(t, b, tt.first)
			second := &Session{Identity: Identity{ConnectionID: "c1"}, Hello: tt.second, mux: first.sess.mux}
			var r registry
			r.add(first.sess)
			stale, others := r.add(second)
			assert.Equal(t, tt.wantStale, len(stale) == 1 && stale[0] == first.sess, "stale: %v", stale)
			assert.Equal(t, tt.wantOthers, len(others) == 1 && others[0] == first.sess, "others: %v", others)
		})
	}
}

func TestBrokerKeepsASecondLiveProcessAndFlagsIt(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	now := time.Now()
	first := connect(t, b, process("p1", now))
	second := connect(t, b, process("p2", now))

	n := first.nextNotice(t)
	assert.Equal(t, protocol.NoticeDuplicateAgent, n.Code)
	assert.False(t, n.Cleared)
	assert.Contains(t, n.Message, `agent id "agent-1" is used by 2 agent processes at once`)
	assert.Equal(t, n, second.nextNotice(t))
	assert.False(t, first.sess.Closed(), "a live process's tunnel was closed")
	assert.False(t, second.sess.Closed())
	assert.Len(t, b.Sessions("c1"), 2)

	require.NoError(t, second.tun.Close())
	n = first.nextNotice(t)
	assert.Equal(t, protocol.Notice{Code: protocol.NoticeDuplicateAgent, Cleared: true,
		Message: `agent id "agent-1" is used by one agent process again`}, n)
	assert.False(t, first.sess.Closed())
}

func TestBrokerClosesTheDeadTunnelOfARestartedAgent(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	now := time.Now()
	old := connect(t, b, process("p1", now))
	old.conn.freeze() // the machine lost its link; the relay has not noticed
	restarted := connect(t, b, process("p2", now.Add(time.Second)))

	select {
	case <-old.sess.Done():
	case <-time.After(waitFor):
		t.Fatal("the dead tunnel of the earlier run was kept")
	}
	assert.False(t, restarted.sess.Closed())
	assert.False(t, restarted.sess.Duplicate(), "a restart was flagged as a duplicate")
	assert.Equal(t, []*Session{restarted.sess}, b.Sessions("c1"))
}

func TestBrokerReplacesTheStaleTunnelOfTheSameProcess(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	now := time.Now()
	old := connect(t, b, process("p1", now))
	again := connect(t, b, process("p1", now))
	select {
	case <-old.sess.Done():
	case <-time.After(waitFor):
		t.Fatal("the tunnel the process gave up on was kept")
	}
	assert.Equal(t, []*Session{again.sess}, b.Sessions("c1"))
	assert.False(t, again.sess.Duplicate())
}
