package agent

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// The status says why tunnels are down: the relay's reason and when the
// agent tries again, which is minutes away for a revoked connection.
func TestStatusSaysWhyTunnelsAreDown(t *testing.T) {
	relay := tunneltest.NewRelay(t, tunneltest.RelayOptions{Authorize: func(*http.Request) *protocol.Error {
		return protocol.Errorf(protocol.AgentTokenRevoked, "the agent token's connection was revoked")
	}})
	cfg := testkit.ParseConfig(t, "relay_url: "+relay.URL()+"\ntunnels: 1\nallow: []\n")
	a := runAgent(t, Options{Config: cfg, RevokedPause: 5 * time.Minute})
	var down *TunnelsDown
	require.Eventually(t, func() bool { down = a.Status().Down; return down != nil }, testkit.WaitTimeout, 10*time.Millisecond)
	assert.Equal(t, protocol.AgentTokenRevoked, down.Reason)
	assert.Equal(t, "the agent token's connection was revoked", down.Message)
	require.NotNil(t, down.NextTryAt)
	wait := time.Until(*down.NextTryAt)
	assert.Greater(t, wait, 4*time.Minute, "a revoked agent waits minutes, with jitter")
	assert.Less(t, wait, 6*time.Minute)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 1, relay.Requests(), "no retry before the pause ends")
}

// A relay that was never reached: the status names the cause, with no
// reason code, and the agent does not say so again on every try.
func TestUnreachableRelayIsLoggedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	logs := &testkit.LogSink{}
	cfg := testkit.ParseConfig(t, "relay_url: ws://"+dead+"\ntunnels: 2\nallow: []\n")
	a := runAgent(t, Options{Config: cfg, Logger: logs.Logger(), BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	require.Eventually(t, func() bool {
		return len(logs.Find("tunnel down; reconnecting")) >= 5
	}, testkit.WaitTimeout, 10*time.Millisecond, "the agent keeps trying")
	warned := logs.Find("cannot reach the relay; retrying quietly with backoff until it answers")
	require.Len(t, warned, 1, "said once")
	assert.Contains(t, warned[0].Attrs["err"], "connection refused")
	for _, r := range logs.Find("tunnel down; reconnecting") {
		assert.Equal(t, "DEBUG", r.Level.String(), "repeats are quiet")
	}
	down := a.Status().Down
	require.NotNil(t, down)
	assert.Empty(t, down.Reason)
	assert.Contains(t, down.Message, "connection refused")
}
