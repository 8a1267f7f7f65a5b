package status

import (
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
)

// View is one agent session as the status shows it, on whichever node it
// lives. A cluster shares views through its store, as JSON.
type View struct {
	SessionID   string         `json:"session_id"`
	NodeID      string         `json:"node_id"`
	Hello       protocol.Hello `json:"hello"`
	ConnectedAt time.Time      `json:"connected_at"`
	// Health is the newest report and BeatAt when it arrived; nil and
	// zero before the first.
	Health   *protocol.Health `json:"health,omitempty"`
	BeatAt   time.Time        `json:"beat_at"`
	Active   int64            `json:"active_streams"`
	Draining bool             `json:"draining,omitempty"`
}

// ViewOf is the view of a live session of node.
func ViewOf(s *broker.Session, node string) View {
	v := View{SessionID: s.ID, NodeID: node, Hello: s.Hello, ConnectedAt: s.ConnectedAt,
		Active: s.Active(), Draining: s.Draining()}
	if h, at := s.Health(); !at.IsZero() {
		v.Health, v.BeatAt = &h, at
	}
	return v
}

// LastBeat is when the agent last reported, or the session's start.
func (v View) LastBeat() time.Time {
	if v.BeatAt.IsZero() {
		return v.ConnectedAt
	}
	return v.BeatAt
}

// Allowlist is the newest allowlist summary the agent reported.
func (v View) Allowlist() protocol.Allowlist {
	if v.Health == nil {
		return v.Hello.Allowlist
	}
	return v.Health.Allowlist
}
