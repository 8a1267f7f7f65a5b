package session

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// Every test closes its sessions, and Close waits for what they started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoHandler copies every stream back to the relay.
type echoHandler struct{}

func (echoHandler) ServeStream(_ context.Context, st *tunnel.Stream, _ *slog.Logger) func() {
	return func() {
		defer st.Close()
		_, _ = io.Copy(st, st)
	}
}

// testReporter says hello and counts nothing; change wakes Health.
type testReporter struct {
	mu      sync.Mutex
	changed chan struct{}
}

func newReporter() *testReporter { return &testReporter{changed: make(chan struct{})} }

func (*testReporter) Hello() protocol.Hello {
	return protocol.Hello{ProtocolVersion: protocol.Version, AgentID: "session-test", Tunnels: 1}
}

func (*testReporter) Health() protocol.Health { return protocol.Health{Time: time.Now().UTC()} }

func (r *testReporter) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// change wakes the watchers once, as the gate's Set does.
func (r *testReporter) change() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.changed)
	r.changed = make(chan struct{})
}

func testOptions(t *testing.T, relayURL string) Options {
	t.Helper()
	u, err := url.Parse(relayURL)
	require.NoError(t, err)
	return Options{
		URL: u, HTTPClient: &http.Client{}, Token: testkit.Token, UserAgent: "session-test",
		Reporter: newReporter(), Handler: echoHandler{},
		DrainTimeout: testkit.WaitTimeout,
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{}.Validate()
	require.Error(t, err)
	for _, want := range []string{"relay URL", "HTTP client", "token", "reporter and handler", "drain timeout 0s"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = Open(context.Background(), Options{})
	assert.Error(t, err, "Open refuses options that do not validate")
}

// After the relay's GoAway, Serve returns at once while the open stream
// keeps flowing; Drain returns when it ends, and closes the tunnel.
func TestGoAwayThenDrain(t *testing.T) {
	relay := testkit.NewRelay(t, time.Minute)
	s, err := Open(context.Background(), testOptions(t, relay.URL()))
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, "node-test", s.Welcome().NodeID)
	rs := relay.Session(t)
	assert.Equal(t, "session-test", rs.Hello.AgentID)

	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	st, err := rs.Open(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "a", testkit.RoundTrip(t, st, "a"))

	rs.Notify(t, protocol.FrameGoAway, protocol.GoAway{Reason: "draining", Message: "relay node n1 is stopping"})
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrGoAway)
		assert.ErrorContains(t, err, "draining: relay node n1 is stopping", "the relay's reason and message reach the agent's log")
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("Serve did not return after GoAway")
	}
	assert.Equal(t, "b", testkit.RoundTrip(t, st, "b"), "the open stream keeps flowing")

	drained := make(chan struct{})
	go func() { s.Drain(); close(drained) }()
	assert.Equal(t, "c", testkit.Exchange(t, st, "c"))
	select {
	case <-drained:
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("Drain did not return after the last stream ended")
	}
	rs.WaitClosed(t)
}

// A Revoked notice ends Serve with ErrRevoked, saying the relay's reason
// and message, and the session closed.
func TestRevokedClosesTheSession(t *testing.T) {
	tests := map[string]struct {
		notice protocol.Revoked
		want   string
	}{
		"connection revoked": {protocol.Revoked{Message: "revoked by admin"}, "relay revoked the tunnel: revoked by admin"},
		"token expired": {protocol.Revoked{Message: "agent token t1 expired", Reason: protocol.AgentTokenInvalid},
			"relay revoked the tunnel: AGENT_TOKEN_INVALID: agent token t1 expired"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			relay := testkit.NewRelay(t, time.Minute)
			s, err := Open(context.Background(), testOptions(t, relay.URL()))
			require.NoError(t, err)
			rs := relay.Session(t)
			served := make(chan error, 1)
			go func() { served <- s.Serve(context.Background()) }()
			// The agent may end the tunnel before the relay's send returns, so
			// the send's error says nothing; Serve's does.
			_ = rs.Send(protocol.FrameRevoked, tc.notice, testkit.WaitTimeout)
			select {
			case err := <-served:
				require.ErrorIs(t, err, ErrRevoked)
				assert.Equal(t, tc.want, err.Error())
			case <-time.After(testkit.WaitTimeout):
				t.Fatal("Serve did not return after Revoked")
			}
			rs.WaitClosed(t)
			s.Drain() // returns at once: nothing is left to drain
			assert.NoError(t, s.Close(), "Close is idempotent")
		})
	}
}

// Health goes every heartbeat and at once when the reporter says so; a
// stop tells the relay no new stream is taken, and Force ends the drain.
func TestHealthOnChangeAndForcedDrain(t *testing.T) {
	relay := testkit.NewRelay(t, time.Minute)
	opts := testOptions(t, relay.URL())
	force := make(chan struct{})
	opts.Force = force
	rep := newReporter()
	opts.Reporter = rep
	s, err := Open(context.Background(), opts)
	require.NoError(t, err)
	rs := relay.Session(t)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()

	require.Eventually(t, func() bool {
		rep.change() // Serve's health loop may not watch yet at the first
		return len(rs.Healths()) > 0
	}, testkit.WaitTimeout, 20*time.Millisecond, "a change is reported at once, not at the next heartbeat")

	st, err := rs.Open(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "x", testkit.RoundTrip(t, st, "x"))
	stop()
	require.ErrorIs(t, <-served, context.Canceled)
	assert.Equal(t, "y", testkit.RoundTrip(t, st, "y"), "a stop lets the open stream go on until Drain ends")
	close(force)
	s.Drain()
	rs.WaitClosed(t)
}
