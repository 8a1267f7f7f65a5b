package status

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// flapRun drives a Judge through tunnel states, one a second, as a book
// would: it keeps the published state and the recent tunnel events, and
// returns what each step announced ("from>to", "~from>to" when only
// recorded).
type flapRun struct {
	j      Judge
	state  store.PublishedState
	recent []api.Event
}

func newFlapRun(p FlapPolicy) *flapRun {
	return &flapRun{
		j:     Judge{Now: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC), node: "n1", flap: p},
		state: store.PublishedState{Tunnel: TunnelNeverConnected, Auth: AuthActive, Allowlist: "unknown"},
	}
}

func (r *flapRun) step(after time.Duration, tunnel string) []string {
	r.j.Now = r.j.Now.Add(after)
	st := api.Status{TunnelStatus: tunnel, AuthStatus: AuthActive, AllowlistStatus: "unknown"}
	if tunnel == TunnelNeverConnected {
		st.Reason = protocol.AgentNeverConnected
	}
	next, evs := r.j.Next(store.Connection{ID: "c1", Workspace: "w"}, r.state, st, r.recent)
	r.state = next
	var out []string
	for _, e := range evs {
		m := e.From + ">" + e.To
		if e.Suppressed {
			m = "~" + m
		}
		out = append(out, m)
		r.recent = append(r.recent, e)
	}
	return out
}

func TestFlapPolicy(t *testing.T) {
	r := newFlapRun(FlapPolicy{Threshold: 3, Window: time.Minute})
	assert.Equal(t, []string{"never_connected>connected"}, r.step(time.Second, TunnelConnected), "not a flap")
	assert.Equal(t, []string{"connected>disconnected"}, r.step(time.Second, TunnelDisconnected))
	assert.Equal(t, []string{"disconnected>connected"}, r.step(time.Second, TunnelConnected))
	assert.Equal(t, []string{"connected>degraded"}, r.step(time.Second, TunnelDegraded), "losing one of several tunnels is no flap")
	assert.Equal(t, []string{"degraded>connected"}, r.step(time.Second, TunnelConnected))
	assert.Equal(t, []string{"connected>degraded"}, r.step(time.Second, TunnelDegraded))
	assert.False(t, r.state.Flapping, "five moves, two of them in or out of disconnected")
	assert.Equal(t, []string{"degraded>disconnected"}, r.step(time.Second, TunnelDisconnected))
	assert.Equal(t, []string{"~disconnected>degraded", "disconnected>flapping"}, r.step(time.Second, TunnelDegraded),
		"the fourth move in or out of disconnected within a minute: one event, from the state last announced")
	assert.True(t, r.state.Flapping)
	assert.Equal(t, TunnelDegraded, r.state.Tunnel, "the published state follows the sessions")
	assert.Equal(t, []string{"~degraded>connected"}, r.step(time.Second, TunnelConnected), "recorded, not announced")
	assert.Empty(t, r.step(28*time.Second, TunnelConnected), "still within half a window of the last move in or out of disconnected")
	assert.Equal(t, []string{"flapping>connected"}, r.step(time.Second, TunnelConnected), "settled")
	assert.False(t, r.state.Flapping)
	assert.Equal(t, []string{"connected>disconnected"}, r.step(time.Second, TunnelDisconnected), "announced again")
	assert.Equal(t, "n1", r.recent[0].Node)
}

func TestFlapPolicyRevocationEndsFlapping(t *testing.T) {
	r := newFlapRun(FlapPolicy{Threshold: 1, Window: time.Minute})
	r.step(time.Second, TunnelConnected)
	r.step(time.Second, TunnelDisconnected)
	assert.Equal(t, []string{"~disconnected>connected", "disconnected>flapping"}, r.step(time.Second, TunnelConnected))
	assert.Equal(t, []string{"~connected>revoked", "flapping>revoked"}, r.step(time.Second, TunnelRevoked),
		"a revocation is announced at once")
	assert.False(t, r.state.Flapping)
}

func TestFlapPolicyOff(t *testing.T) {
	r := newFlapRun(FlapPolicy{})
	for i := range 20 {
		state := TunnelConnected
		if i%2 == 1 {
			state = TunnelDisconnected
		}
		assert.Len(t, r.step(time.Second, state), 1)
	}
	assert.False(t, r.state.Flapping)
	r.state.Flapping = true // set when the policy was on
	assert.Equal(t, []string{"flapping>disconnected"}, r.step(time.Second, TunnelDisconnected), "turning it off ends flapping")
}

func TestFlapPolicyCountsOnlyTheWindow(t *testing.T) {
	r := newFlapRun(FlapPolicy{Threshold: 2, Window: 10 * time.Second})
	r.step(time.Second, TunnelConnected)
	for range 10 { // a move every 6 s: never more than 2 within 10 s
		r.step(6*time.Second, TunnelDisconnected)
		assert.False(t, r.state.Flapping)
		r.step(6*time.Second, TunnelConnected)
		assert.False(t, r.state.Flapping)
	}
}

// TestSeenBeforeNeverGoesBack: a publication that read the row before the
// first tunnel was recorded (the tunnel ended within milliseconds) says
// disconnected, not never_connected, once connected was published.
func TestSeenBeforeNeverGoesBack(t *testing.T) {
	r := newFlapRun(FlapPolicy{})
	assert.Equal(t, []string{"never_connected>connected"}, r.step(time.Millisecond, TunnelConnected))
	assert.Equal(t, []string{"connected>disconnected"}, r.step(time.Millisecond, TunnelNeverConnected))
	assert.Equal(t, TunnelDisconnected, r.state.Tunnel)
	assert.Empty(t, r.step(time.Millisecond, TunnelDisconnected), "the row caught up: no news")
	assert.Equal(t, protocol.AgentOffline, r.recent[1].Reason)

	fresh := newFlapRun(FlapPolicy{})
	assert.Empty(t, fresh.step(time.Millisecond, TunnelNeverConnected), "never connected stays so")
}
