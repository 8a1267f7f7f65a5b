package relay

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// An agent that reconnects while the relay still holds its old tunnels
// (it hung, or its link dropped without a FIN) wins with its newest
// sessions: the oldest beyond the tunnels it wants are closed.
func TestNewestSessionsOfAnAgentWin(t *testing.T) {
	h := newHarness(t)
	c := h.createConnection(t, "acme", "acme")
	old := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer old.Close()
	h.waitTunnels(t, c.ID, 1)

	newer := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer newer.Close()
	requireDone(t, old.Session.Done(), "the older session of the agent was not closed")
	h.waitTunnels(t, c.ID, 1)
	assert.False(t, newer.Session.IsClosed(), "the newest session stays")

	// Another replica of the same connection is not affected.
	other := h.connectAgent(t, c.AgentToken, testHello("agent-2", 1), echo)
	defer other.Close()
	h.waitTunnels(t, c.ID, 2)
	assert.False(t, newer.Session.IsClosed())
}

// A diagnostic handshake (doctor) gets Welcome but is no tunnel: the
// connection's status does not change.
func TestProbeHandshakeChangesNoStatus(t *testing.T) {
	h := newHarness(t)
	c := h.createConnection(t, "acme", "acme")
	hello := testHello("agent-1-doctor", 1)
	hello.Probe = true
	probe := h.connectAgent(t, c.AgentToken, hello, echo)
	defer probe.Close()
	assert.Equal(t, h.srv.NodeID(), probe.Welcome.NodeID)
	requireDone(t, probe.Session.Done(), "the relay kept the probe's tunnel open")
	st := h.status(t, c.ID, "")
	assert.Equal(t, "never_connected", st.TunnelStatus)
	assert.Nil(t, st.LastSeenAt)
}
