package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// history reads a connection's history with the admin key.
func (h *harness) history(t *testing.T, connID, query string) api.History {
	t.Helper()
	return decode[api.History](t, h.call(t, http.MethodGet, "/v1/connections/"+connID+"/history"+query, h.adminKey, nil), http.StatusOK)
}

// waitHistory polls the history until it holds n transitions of types
// (of any type without types); the single node writes them from a queue.
func (h *harness) waitHistory(t *testing.T, connID string, n int, types ...string) api.History {
	t.Helper()
	var last api.History
	require.Eventually(t, func() bool {
		last = h.pollHistory(connID)
		return len(moves(last, types...)) >= n
	}, waitFor, pollEvery, "history never held %d transitions: %+v", n, last.Transitions)
	return last
}

// pollHistory is history for require.Eventually conditions.
func (h *harness) pollHistory(connID string) api.History {
	return pollJSON[api.History](h, "/v1/connections/"+connID+"/history")
}

// moves lists a history's transitions as "type:from>to", with a "~" for
// suppressed ones; with types, only transitions of those types.
func moves(h api.History, types ...string) []string {
	var out []string
	for _, e := range h.Transitions {
		if len(types) > 0 && !slices.Contains(types, e.Type) {
			continue
		}
		m := e.Type + ":" + e.From + ">" + e.To
		if e.Suppressed {
			m = "~" + m
		}
		out = append(out, m)
	}
	return out
}

func TestHistoryKeepsEveryTransition(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "team-a")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.waitHistory(t, c.ID, 2)
	time.Sleep(50 * time.Millisecond) // a measurable time connected
	a.Close()
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).TunnelStatus == "disconnected" }, waitFor, pollEvery)

	hist := h.waitHistory(t, c.ID, 4)
	assert.Equal(t, []string{"tunnel:never_connected>connected", "allowlist:unknown>configured",
		"tunnel:connected>disconnected", "allowlist:configured>unknown"}, moves(hist))
	up, down := hist.Transitions[0], hist.Transitions[2]
	assert.Equal(t, "node-test", up.Node, "the node that published it")
	assert.Equal(t, protocol.AgentOffline, down.Reason)
	assert.Equal(t, protocol.ProviderConnectivityBlocked, down.ProviderErrorCode)
	assert.InDelta(t, down.Time.Sub(up.Time).Seconds(), up.DurationSeconds, 0.001, "connected lasted until the disconnect")
	assert.GreaterOrEqual(t, up.DurationSeconds, 0.05)
	assert.False(t, up.Ongoing)
	assert.True(t, down.Ongoing, "disconnected holds")
	assert.False(t, hist.Transitions[1].Ongoing)
	assert.True(t, hist.Transitions[3].Ongoing, "the allowlist's newest holds too")
	assert.Greater(t, hist.Uptime.Day, 0.0)
	assert.Less(t, hist.Uptime.Day, 1.0)
	assert.Equal(t, hist.Uptime.Day, hist.Uptime.Week, "the connection is younger than a day")
	assert.False(t, hist.Truncated)

	last := h.history(t, c.ID, "?limit=2")
	assert.Equal(t, []string{"tunnel:connected>disconnected", "allowlist:configured>unknown"}, moves(last), "the newest")
	assert.True(t, last.Truncated)
	later := h.history(t, c.ID, "?since="+down.Time.Add(time.Microsecond).Format(time.RFC3339Nano))
	assert.Empty(t, later.Transitions)
	assert.NotNil(t, later.Transitions)
}

func TestHistoryAnswersLikeTheAPI(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "team-a")
	other := h.createKey(t, "team-b")
	own := h.createKey(t, "team-a")
	path := "/v1/connections/" + c.ID + "/history"
	hidden := h.call(t, http.MethodGet, path, other, nil)
	missing := h.call(t, http.MethodGet, "/v1/connections/conn_nope/history", other, nil)
	requireRefusal(t, hidden, http.StatusNotFound, protocol.ConnectionNotFound)
	assert.Equal(t, withoutRequestID(t, missing).Reason, withoutRequestID(t, hidden).Reason)
	decode[api.History](t, h.call(t, http.MethodGet, path, own, nil), http.StatusOK)
	for name, q := range map[string]string{
		"since not a time":   "?since=yesterday",
		"limit zero":         "?limit=0",
		"limit too big":      "?limit=1001",
		"limit not a number": "?limit=ten",
	} {
		t.Run(name, func(t *testing.T) {
			requireRefusal(t, h.call(t, http.MethodGet, path+q, own, nil), http.StatusBadRequest, protocol.InvalidRequest)
		})
	}
}

// TestFlappingIsOneEvent: a tunnel that goes up and down more often than
// the threshold turns flapping with one event; its further moves are in
// the history, marked suppressed, and no event; it settles with one event
// once it held still for half the window.
func TestFlappingIsOneEvent(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.FlapThreshold, c.FlapWindow = 3, 5*time.Second })
	sub := h.subscribe(t, h.adminKey, "", "?connection_id="+c.ID)
	// Each move is awaited as an event before the next: a tunnel closed
	// before its status was judged connected was never up to the status,
	// and an agent's close is as quick as the relay's bookkeeping.
	bounce := func(from string) {
		a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
		requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), from, "connected", "")
		a.Close()
		requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "connected", "disconnected", protocol.AgentOffline)
	}
	bounce("never_connected") // never_connected>connected (no flap), connected>disconnected (1)
	bounce("disconnected")    // (2), (3)

	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo) // (4): flapping
	defer a.Close()
	flapping := sub.nextEvent(t, c.ID, api.EventTunnel)
	requireTransition(t, flapping, "disconnected", "flapping", "")
	st := h.status(t, c.ID, "")
	assert.Equal(t, "flapping", st.TunnelStatus)
	assert.False(t, st.Ready, "a flapping tunnel is not ready")
	require.Len(t, st.Warnings, 1)
	assert.Equal(t, api.WarningFlapping, st.Warnings[0].Code)
	assert.Contains(t, st.Warnings[0].Message, "it is up at this moment")

	// It holds still: one event out of flapping, half a window later.
	settled := sub.nextEvent(t, c.ID, api.EventTunnel)
	requireTransition(t, settled, "flapping", "connected", "")
	assert.GreaterOrEqual(t, settled.Time.Sub(flapping.Time), 2500*time.Millisecond)
	assert.Equal(t, "connected", h.status(t, c.ID, "").TunnelStatus)

	hist := h.waitHistory(t, c.ID, 7, api.EventTunnel)
	assert.Equal(t, []string{
		"tunnel:never_connected>connected", "tunnel:connected>disconnected", "tunnel:disconnected>connected",
		"tunnel:connected>disconnected", "~tunnel:disconnected>connected", "tunnel:disconnected>flapping",
		"tunnel:flapping>connected",
	}, moves(hist, api.EventTunnel), "every move is in the history; the one that started flapping is suppressed")
}

// TestHistoryWrittenOnStop: the transitions a stop causes (its tunnels
// closing) are in the history after the node is gone.
func TestHistoryWrittenOnStop(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	h.waitHistory(t, c.ID, 2)
	h.srv.Close()
	recs, err := h.srv.store.ConnectionHistory(context.Background(), c.ID, time.Time{}, 10)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	var last api.Event
	require.NoError(t, json.Unmarshal(recs[2].Body, &last))
	assert.Equal(t, "connected", last.From)
	assert.Equal(t, "disconnected", last.To)
}
