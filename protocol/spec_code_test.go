package protocol_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/session"
	"github.com/postern/postern/agent/stream"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/broker"
)

// These tests hold spec.md against code that lives beside the protocol
// package: the constants of section 2, some of which belong to the
// transport. See spec.md, section 14.

func TestSpecConstants(t *testing.T) {
	want := map[string]string{
		"Subprotocol":       protocol.Subprotocol,
		"TunnelPath":        protocol.TunnelPath,
		"Version":           fmt.Sprint(protocol.Version),
		"MaxControlFrame":   fmt.Sprint(protocol.MaxControlFrame),
		"MaxStreamFrame":    fmt.Sprint(protocol.MaxStreamFrame),
		"MaxRequestIDLen":   fmt.Sprint(protocol.MaxRequestIDLen),
		"MaxHostLen":        fmt.Sprint(protocol.MaxHostLen),
		"MaxBaseURLLen":     fmt.Sprint(protocol.MaxBaseURLLen),
		"tunnel.MaxMessage": fmt.Sprint(tunnel.MaxMessage),
	}
	got := map[string]string{}
	for _, row := range protocol.SpecTable(t, protocol.ReadSpec(t), "Constant") {
		got[protocol.CodeCell(t, row["Constant"])] = protocol.CodeCell(t, row["Value"])
	}
	assert.Equal(t, want, got)
}

// TestSpecTimers holds the timers table of section 10 against the values
// the code uses, on both ends.
func TestSpecTimers(t *testing.T) {
	rows := map[string]map[string]string{}
	for _, row := range protocol.SpecTable(t, protocol.ReadSpec(t), "Timer") {
		rows[row["Timer"]] = row
	}
	cell := func(timer string) string {
		t.Helper()
		row, ok := rows[timer]
		require.True(t, ok, "spec.md timers table has no row %q", timer)
		return row["Default"]
	}
	relayDefaults := relay.DefaultConfig()
	agentDefaults := agent.DefaultOptions()
	heartbeat := relayDefaults.HeartbeatInterval
	want := map[string]string{
		"Health period (`heartbeat_ms`)":           specDuration(heartbeat),
		"Tunnel degraded after no Health for":      periods(broker.DegradedAfter(heartbeat), heartbeat),
		"Session ended after no control frame for": periods(broker.EndedAfter*heartbeat, heartbeat),
		"yamux keepalive interval / answer wait":   specDuration(tunnel.KeepAliveInterval) + " / " + specDuration(tunnel.WriteTimeout),
		"Handshake (upgrade through Welcome)":      specDuration(relayDefaults.HandshakeTimeout),
		"Request frame wait after stream open":     specDuration(stream.RequestTimeout),
		"Open timeout (stream, request, result)":   specDuration(relayDefaults.OpenTimeout),
		"Idle data stream":                         specDuration(relayDefaults.IdleTimeout),
		"Data-phase write making no progress":      specDuration(tunnel.SpliceWriteTimeout),
		"Wait for peer FIN after own FIN":          "none",
		"Reconnect backoff":                        specDuration(agentDefaults.BackoffBase) + " doubling to " + specDuration(agentDefaults.BackoffMax),
		"Tunnel handshake pace": fmt.Sprintf("%g a second, %d at once; slots up to %s ahead",
			relayDefaults.TunnelHandshakesPerSecond, relayDefaults.TunnelHandshakeBurst, specDuration(relay.MaxHandshakeWait)),
		"Pause after a `Retry-After`": "`Retry-After` + uniform [0, " + specDuration(agent.RetryAfterSpread) + "), instead of the backoff",
	}
	for timer, w := range want {
		assert.Equal(t, w, cell(timer), timer)
	}
	assert.Len(t, rows, len(want), "every row of the timers table is held against the code")

	// The agent's side of the shared rows.
	assert.Equal(t, relayDefaults.OpenTimeout, agentDefaults.OpenTimeout, "the agent caps its own work at the relay's open timeout")
	assert.Equal(t, relayDefaults.IdleTimeout, agentDefaults.IdleTimeout, "idle data streams end alike on both ends")
	assert.Contains(t, rows["Handshake (upgrade through Welcome)"]["Where"],
		"agent: "+specDuration(session.DialTimeout)+" dial + "+specDuration(session.HelloTimeout)+" Hello/Welcome")
}

// specDuration writes d as the spec does: "500 ms", "0.5 s", "15 s",
// "15 min".
func specDuration(d time.Duration) string {
	switch {
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + " min"
	case d%time.Second == 0:
		return strconv.Itoa(int(d/time.Second)) + " s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

// periods writes d in heartbeat periods: "2.5 periods".
func periods(d, heartbeat time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(heartbeat), 'f', -1, 64) + " periods"
}
