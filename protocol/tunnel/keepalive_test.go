package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quickConfig is DefaultConfig with a keepalive fast enough for a test.
func quickConfig() Config {
	c := DefaultConfig()
	c.KeepAliveInterval = 50 * time.Millisecond
	c.WriteTimeout = 300 * time.Millisecond
	return c
}

func TestAPeerThatStopsAnsweringEndsTheSessionWithTheKeepaliveAsCause(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }() // reads everything, answers nothing
	sess, err := Client(a, quickConfig())
	require.NoError(t, err)
	defer sess.Close()

	accepted := make(chan error, 1)
	go func() {
		_, err := sess.Accept()
		accepted <- err
	}()
	select {
	case err := <-accepted:
		assert.ErrorIs(t, err, ErrKeepAliveTimeout, "the session says why it ended")
	case <-time.After(10 * time.Second):
		t.Fatal("a silent peer was not noticed")
	}
	assert.True(t, sess.IsClosed())
}

// A WebSocket client whose peer left a ping unanswered ends at once: it
// does not wait for the answer to a close frame (wsCloseWait), which a
// silent peer would not send either. An agent reports its tunnel down
// only once the session has closed.
func TestASilentPeerEndsAWebSocketSessionWithoutTheCloseWait(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }() // reads everything, answers nothing
	cfg := quickConfig()
	start := time.Now()
	sess, err := Client(newCoalescer(newClientConn(a), nil), cfg)
	require.NoError(t, err)
	_, err = sess.Accept()
	assert.ErrorIs(t, err, ErrKeepAliveTimeout)
	require.NoError(t, sess.Close())
	took := time.Since(start)
	assert.Less(t, took, cfg.KeepAliveInterval+cfg.WriteTimeout+wsCloseWait/2,
		"the session ended %s after it started (keepalive %s, answer within %s)", took, cfg.KeepAliveInterval, cfg.WriteTimeout)
}

func TestAnAnsweringPeerKeepsTheSessionAndCostsNoGoroutineBetweenPings(t *testing.T) {
	const pairs = 20
	before := runtime.NumGoroutine()
	var sessions []*Session
	for range pairs {
		a, b := net.Pipe()
		c, err := Client(a, quickConfig())
		require.NoError(t, err)
		s, err := Server(b, quickConfig())
		require.NoError(t, err)
		sessions = append(sessions, c, s)
	}
	defer func() {
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	// Ten keepalive intervals: every ping is answered.
	time.Sleep(10 * quickConfig().KeepAliveInterval)
	for _, s := range sessions {
		require.False(t, s.IsClosed(), "a session whose peer answers stays up")
	}
	// The multiplexer's receive loop per session, and nothing that waits
	// for the next ping or its answer (an answer being written may add
	// one for a moment).
	extra := runtime.NumGoroutine() - before
	assert.LessOrEqual(t, extra, len(sessions)+pairs/2, "goroutines for %d idle sessions", len(sessions))
}

// pingCounter counts the keepalive pings (yamux ping frames with SYN)
// written through it: the multiplexer writes each frame's header in a
// Write of its own.
type pingCounter struct {
	net.Conn
	pings atomic.Int64
}

func (c *pingCounter) Write(p []byte) (int, error) {
	if len(p) == 12 && p[1] == 2 && binary.BigEndian.Uint16(p[2:4])&1 != 0 {
		c.pings.Add(1)
	}
	return c.Conn.Write(p)
}

// A peer heard from is not pinged: with both ends keeping alive, about
// one ping an interval crosses the tunnel, not one each way.
func TestOnlyOneEndPingsWhenBothKeepAlive(t *testing.T) {
	a, b := net.Pipe()
	ca, cb := &pingCounter{Conn: a}, &pingCounter{Conn: b}
	cfg := quickConfig()
	client, err := Client(ca, cfg)
	require.NoError(t, err)
	defer client.Close()
	server, err := Server(cb, cfg)
	require.NoError(t, err)
	defer server.Close()

	const intervals = 20
	time.Sleep(intervals * cfg.KeepAliveInterval)
	require.False(t, client.IsClosed())
	require.False(t, server.IsClosed())
	pings := ca.pings.Load() + cb.pings.Load()
	assert.GreaterOrEqual(t, pings, int64(intervals/4), "the ends still ping")
	assert.LessOrEqual(t, pings, int64(intervals*3/2), "pings in %d intervals: %d from the client, %d from the server",
		intervals, ca.pings.Load(), cb.pings.Load())
}
