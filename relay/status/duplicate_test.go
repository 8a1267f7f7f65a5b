package status

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// tunnelOf is one session of an agent process as a node shows it.
func tunnelOf(session, instance, host string, started, now time.Time) View {
	summary := protocol.Allowlist{Status: "configured", Mode: "enforce", Count: 1}
	return View{SessionID: session, NodeID: "n1", ConnectedAt: now, BeatAt: now,
		Hello: protocol.Hello{AgentID: "agent-1", InstanceID: instance, Hostname: host, Tunnels: 1,
			StartedAt: started, Allowlist: summary}}
}

func TestStatusWarnsOfTwoProcessesWithOneAgentID(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	k := New(Config{NodeID: "n1", HeartbeatInterval: 15 * time.Second}, nil, nil, nil)
	c := store.Connection{ID: "c1", Workspace: "w", FirstConnectedAt: &now}
	tests := map[string]struct {
		views    []View
		wantWarn string
		agents   int
	}{
		"one process, two tunnels": {views: []View{
			tunnelOf("s1", "p1", "vm-1", now, now), tunnelOf("s2", "p1", "vm-1", now, now)}, agents: 1},
		"two processes": {views: []View{
			tunnelOf("s1", "p1", "vm-1", now, now), tunnelOf("s2", "p2", "vm-2", now, now)}, agents: 2,
			wantWarn: `agent id "agent-1" is used by 2 agent processes at once (hosts: vm-1, vm-2)`},
		"two older agents told apart by start time": {views: []View{
			tunnelOf("s1", "", "vm-1", now, now), tunnelOf("s2", "", "vm-1", now.Add(time.Second), now)}, agents: 2,
			wantWarn: `agent id "agent-1" is used by 2 agent processes at once (hosts: vm-1, vm-1)`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			st := k.compute(c, tt.views, store.Failure{}, nil, now)
			assert.Len(t, st.Agents, tt.agents)
			assert.Equal(t, TunnelConnected, st.TunnelStatus, "a duplicate still serves")
			if tt.wantWarn == "" {
				assert.Empty(t, st.Warnings)
				return
			}
			require.Len(t, st.Warnings, 1)
			assert.Equal(t, api.WarningDuplicateAgent, st.Warnings[0].Code)
			assert.Contains(t, st.Warnings[0].Message, tt.wantWarn)
		})
	}
}

func TestDuplicateWarningIsAnnouncedOnceEachWay(t *testing.T) {
	r := newFlapRun(FlapPolicy{})
	j, c := r.j, store.Connection{ID: "c1", Workspace: "w"}
	ok := api.Status{TunnelStatus: TunnelConnected, AuthStatus: AuthActive, AllowlistStatus: "configured"}
	dup := ok
	dup.Warnings = []api.Warning{{Code: api.WarningDuplicateAgent, Message: "two"}}

	state, evs := j.Next(c, StateOf(ok), dup, nil)
	require.Len(t, evs, 1)
	assert.Equal(t, api.Event{Type: api.EventWarning, ConnectionID: "c1", Workspace: "w", Time: j.Now, Node: "n1",
		To: api.WarningDuplicateAgent}, evs[0])
	assert.True(t, state.Duplicate)

	again, evs := j.Next(c, state, dup, nil)
	assert.Empty(t, evs, "a duplicate that lasts is not announced again")

	state, evs = j.Next(c, again, ok, nil)
	require.Len(t, evs, 1)
	assert.Equal(t, api.EventWarning, evs[0].Type)
	assert.Equal(t, api.WarningDuplicateAgent, evs[0].From)
	assert.Empty(t, evs[0].To)
	assert.False(t, state.Duplicate)
}
