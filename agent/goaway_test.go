package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
)

// After a GoAway the agent dials a replacement tunnel at once, while the
// old tunnel keeps serving the stream that was open, so a relay restart
// loses nothing in flight.
func TestGoAwayDrainsOpenStreamsWhileReplacing(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.URL(), tg.Port()))
	a := runAgent(t, Options{Config: cfg, BackoffBase: 20 * time.Millisecond, BackoffMax: 40 * time.Millisecond})
	s1 := relay.Session(t)
	res, st := s1.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res.OK, "%+v", res)
	require.Equal(t, "before", testkit.RoundTrip(t, st, "before"))

	s1.Notify(t, protocol.FrameGoAway, protocol.GoAway{Reason: "shutdown"})
	s2 := relay.Session(t) // the replacement arrives while s1 still serves
	assert.Equal(t, s1.Hello.AgentID, s2.Hello.AgentID)
	assert.False(t, s1.Closed(), "the old tunnel stays up while a stream is open")
	assert.Equal(t, "during", testkit.RoundTrip(t, st, "during"), "the open stream keeps flowing after GoAway")
	require.Eventually(t, func() bool { return a.TunnelsUp() == 1 }, testkit.WaitTimeout, 10*time.Millisecond,
		"the replacement counts as the slot's tunnel")

	// New streams go to the replacement.
	res2, st2 := s2.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res2.OK)
	assert.Equal(t, "new", testkit.Exchange(t, st2, "new"))

	// When the last old stream ends, the old tunnel closes.
	assert.Equal(t, "last", testkit.Exchange(t, st, "last"))
	s1.WaitClosed(t)
	assert.False(t, s2.Closed())
}

// Stopping the agent (Run's context ends) drains: the relay may open no
// new stream, the open one finishes, then Run returns. Force cuts it.
func TestStopDrainsOpenStreams(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			relay := testkit.NewRelay(t, time.Second)
			tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
			cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
				relay.URL(), tg.Port()))
			opts := DefaultOptions()
			opts.Config, opts.Token, opts.Resolver = cfg, testkit.Token, testkit.NewResolver(t, "127.0.0.1:1", 0)
			opts.DrainTimeout = 30 * time.Second
			a, err := New(opts)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() { a.Force(); cancel(); <-done }()

			s1 := relay.Session(t)
			res, st := s1.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
			require.True(t, res.OK)
			require.Equal(t, "a", testkit.RoundTrip(t, st, "a"))

			cancel()
			require.Eventually(t, func() bool { return a.TunnelsUp() == 0 }, testkit.WaitTimeout, 5*time.Millisecond)
			// The agent's yamux go-away reaches the relay's reader shortly.
			require.Eventually(t, func() bool {
				st, err := s1.Open(t.Context())
				if err == nil {
					_ = st.Close()
				}
				return err != nil
			}, testkit.WaitTimeout, 5*time.Millisecond, "a stopping agent takes no new stream")
			if force {
				a.Force()
				requireRunEnds(t, done, "Force did not end the drain")
				return
			}
			assert.Equal(t, "b", testkit.RoundTrip(t, st, "b"), "the open stream keeps flowing while the agent stops")
			select {
			case err := <-done:
				done <- err // let the deferred cleanup see it too
				t.Fatalf("Run returned (%v) while a stream was open", err)
			default:
			}
			assert.Equal(t, "c", testkit.Exchange(t, st, "c"))
			requireRunEnds(t, done, "Run did not return after the last stream ended")
		})
	}
}

// requireRunEnds waits for Run's result on done, which must come without
// error; stuck says what did not happen if it never comes. The result goes
// back on done for the deferred cleanup, which waits for it too.
func requireRunEnds(t *testing.T, done chan error, stuck string) {
	t.Helper()
	select {
	case err := <-done:
		done <- err
		require.NoError(t, err)
	case <-time.After(testkit.WaitTimeout):
		t.Fatal(stuck)
	}
}
