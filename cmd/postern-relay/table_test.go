package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
)

func TestPrintHistory(t *testing.T) {
	head := "connection: conn_1\nuptime:     50.0% over 24 h, 80.0% over 7 d\n\n"
	transitions := []api.HistoryEntry{
		{Event: api.Event{Type: "tunnel", Time: t0, From: "never_connected", To: "connected", Node: "node-a"}, DurationSeconds: 90},
		{Event: api.Event{Type: "tunnel", Time: t0.Add(90 * time.Second), From: "connected", To: "disconnected",
			Reason: "AGENT_OFFLINE", Node: "node-a", Suppressed: true}, DurationSeconds: 2.4, Ongoing: true},
	}
	table := "TIME                  KIND    FROM             TO            REASON         NODE    LASTED  NOTE\n" +
		"2025-06-01T12:00:00Z  tunnel  never_connected  connected     -              node-a  1m30s   \n" +
		"2025-06-01T12:01:30Z  tunnel  connected        disconnected  AGENT_OFFLINE  node-a  2s      ongoing, while flapping, not announced\n"
	for name, tc := range map[string]struct {
		transitions []api.HistoryEntry
		truncated   bool
		want        string
	}{
		"none":             {want: head + "No transition recorded.\n"},
		"none, truncated":  {truncated: true, want: head + "No transition recorded.\n"},
		"two":              {transitions: transitions, want: head + table},
		"two of many more": {transitions: transitions, truncated: true, want: head + table + "\nOlder transitions were left out: raise --limit or narrow --since.\n"},
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			require.NoError(t, printHistory(&b, api.History{ConnectionID: "conn_1", Transitions: tc.transitions,
				Truncated: tc.truncated, Uptime: api.Uptime{Day: 0.5, Week: 0.8}}))
			assert.Equal(t, tc.want, b.String())
		})
	}
}

func TestPrintNodes(t *testing.T) {
	var b strings.Builder
	require.NoError(t, printNodes(&b, api.NodeList{Nodes: []api.Node{
		{ID: "node-a", PeerURL: "ws://10.0.0.1:7443", Sessions: 2, StartedAt: t0, RenewedAt: t0.Add(10 * time.Second), Self: true},
		{ID: "node-b", Draining: true},
	}}, t0.Add(11500*time.Millisecond)))
	assert.Equal(t, "NODE                PEER                SESSIONS  DRAINING  LEASE AGE  STARTED\n"+
		"node-a (this node)  ws://10.0.0.1:7443  2         no        1.5s       2025-06-01T12:00:00Z\n"+
		"node-b              -                   0         yes       -          -\n", b.String())

	b.Reset()
	require.NoError(t, printNodes(&b, api.NodeList{}, t0))
	assert.Equal(t, "NODE  PEER  SESSIONS  DRAINING  LEASE AGE  STARTED\n", b.String(), "no node: the header alone")
}

func TestPrintStatusShowsWarnings(t *testing.T) {
	var b strings.Builder
	st := api.Status{ConnectionID: "conn_1", TunnelStatus: "connected", AuthStatus: "active", AllowlistStatus: "configured",
		Warnings: []api.Warning{{Code: api.WarningDuplicateAgent, Message: `agent id "agent-1" is used by 2 agent processes at once`}}}
	require.NoError(t, printFields(&b, statusFields(st)...))
	assert.Contains(t, b.String(), "\nwarning:    DUPLICATE_AGENT: agent id \"agent-1\" is used by 2 agent processes at once\n")
}
