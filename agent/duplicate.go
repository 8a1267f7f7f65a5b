package agent

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/postern/postern/protocol"
)

// newInstanceID names one run of the agent: random, so that a clone of
// this machine, or a second process with the same config, differs.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported systems
	return hex.EncodeToString(b[:])
}

// notice takes a relay Notice received on the slot's tunnel. A
// DUPLICATE_AGENT notice is logged when the agent becomes, or stops being,
// a duplicate (not once per tunnel), and shows in Status while it lasts.
// Other codes are logged and otherwise ignored.
func (a *Agent) notice(slot int, n protocol.Notice) {
	if n.Code != protocol.NoticeDuplicateAgent {
		a.log.Info("relay notice", "tunnel", slot, "code", n.Code, "message", n.Message, "cleared", n.Cleared)
		return
	}
	a.mu.Lock()
	was := len(a.duplicate) > 0
	if n.Cleared {
		delete(a.duplicate, slot)
	} else {
		a.duplicate[slot] = n.Message
	}
	is := len(a.duplicate) > 0
	a.mu.Unlock()
	switch {
	case is && !was:
		a.log.Warn("duplicate agent: another postern-agent process is connected with this agent_id; "+
			"both keep serving, but give each machine its own agent_id or stop the extra process",
			"agent", a.agentID, "instance", a.instanceID, "relay_says", n.Message)
	case was && !is:
		a.log.Info("duplicate agent cleared: this is again the only process with this agent_id",
			"agent", a.agentID, "instance", a.instanceID)
	}
}

// DuplicateCode is the code of LocalStatus's warning while the relay says
// another agent process uses the same agent id.
const DuplicateCode = protocol.NoticeDuplicateAgent

// Warning is one condition of the agent worth an admin's eye that does
// not stop it from serving.
type Warning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// warningsLocked lists the agent's warnings; a.mu is held.
func (a *Agent) warningsLocked() []Warning {
	for _, msg := range a.duplicate {
		return []Warning{{Code: DuplicateCode, Message: msg}}
	}
	return nil
}
