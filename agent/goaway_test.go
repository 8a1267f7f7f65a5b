package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// After a GoAway the agent dials a replacement tunnel at once, while the
// old tunnel keeps serving the stream that was open, so a relay restart
// loses nothing in flight.
func TestGoAwayDrainsOpenStreamsWhileReplacing(t *testing.T) {
	relay := newFakeRelay(t, time.Second)
	tg := newTarget(t, "127.0.0.1:0", echo)
	cfg := parseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.url(), tg.port()))
	a := runAgent(t, Options{Config: cfg, BackoffBase: 20 * time.Millisecond, BackoffMax: 40 * time.Millisecond})
	s1 := relay.session(t)
	res, st := s1.dial(t, dialRequest("127.0.0.1", tg.port()))
	require.True(t, res.OK, "%+v", res)
	require.Equal(t, "before", roundTrip(t, st, "before"))

	s1.notify(t, protocol.FrameGoAway, protocol.GoAway{Reason: "shutdown"})
	s2 := relay.session(t) // the replacement arrives while s1 still serves
	assert.Equal(t, s1.hello.AgentID, s2.hello.AgentID)
	assert.False(t, s1.closed(), "the old tunnel stays up while a stream is open")
	assert.Equal(t, "during", roundTrip(t, st, "during"), "the open stream keeps flowing after GoAway")
	require.Eventually(t, func() bool { return a.TunnelsUp() == 1 }, waitTimeout, 10*time.Millisecond,
		"the replacement counts as the slot's tunnel")

	// New streams go to the replacement.
	res2, st2 := s2.dial(t, dialRequest("127.0.0.1", tg.port()))
	require.True(t, res2.OK)
	assert.Equal(t, "new", exchange(t, st2, "new"))

	// When the last old stream ends, the old tunnel closes.
	assert.Equal(t, "last", exchange(t, st, "last"))
	s1.waitClosed(t)
	assert.False(t, s2.closed())
}
