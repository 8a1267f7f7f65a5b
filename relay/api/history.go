package api

import "time"

// History is the body of GET /v1/connections/{id}/history: a connection's
// transitions, oldest first, and its uptime.
type History struct {
	ConnectionID string         `json:"connection_id"`
	Transitions  []HistoryEntry `json:"transitions"`
	// Truncated says that older transitions in the period asked for
	// were left out by the limit.
	Truncated bool   `json:"truncated"`
	Uptime    Uptime `json:"uptime"`
}

// HistoryEntry is one transition of the history: the event as it was
// published (its id orders the history), and how long the state it
// entered lasted.
type HistoryEntry struct {
	Event
	// DurationSeconds is how long the connection stayed in To: until
	// the next transition of the same kind, or until now when Ongoing.
	DurationSeconds float64 `json:"duration_seconds"`
	// Ongoing marks the newest transition of its kind: its state holds.
	Ongoing bool `json:"ongoing,omitempty"`
}

// Uptime is the share of time, from 0 to 1, that a connection had a
// tunnel up (tunnel_status connected or degraded), over the last 24 hours
// and 7 days, or since its creation when that is later.
type Uptime struct {
	Day  float64 `json:"last_24h"`
	Week float64 `json:"last_7d"`
	// Since is the start of the 7-day period the history covers.
	Since time.Time `json:"since"`
}
