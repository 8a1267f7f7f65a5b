package tunnel

import (
	"io"
	"net"
	"runtime"
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
