package stream

import (
	"time"

	"github.com/postern/postern/protocol"
)

// LastRefusalsKept is how many refused streams the server remembers for
// the local status page.
const LastRefusalsKept = 20

// Refusal is one refused stream as the local status shows it: what the
// relay asked for and why the agent said no. The audit log has them all.
type Refusal struct {
	Time      time.Time       `json:"time"`
	RequestID string          `json:"request_id"`
	Op        string          `json:"op"`
	Target    string          `json:"target"`
	Reason    protocol.Reason `json:"reason"`
	Message   string          `json:"message,omitempty"`
}

// Refusals returns the streams refused since the server started, counted
// by reason, and the last LastRefusalsKept of them, newest first.
func (s *Server) Refusals() (map[protocol.Reason]int, []Refusal) {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	counts := make(map[protocol.Reason]int, len(s.stats.refusedTotal))
	for r, n := range s.stats.refusedTotal {
		counts[r] = n
	}
	last := make([]Refusal, len(s.stats.lastRefused))
	for i, r := range s.stats.lastRefused {
		last[len(last)-1-i] = r
	}
	return counts, last
}

// noteRefusal counts a refused stream and keeps it among the last ones.
func (s *stats) noteRefusal(r Refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusedTotal == nil {
		s.refusedTotal = make(map[protocol.Reason]int)
	}
	s.refusedTotal[r.Reason]++
	s.lastRefused = append(s.lastRefused, r)
	if n := len(s.lastRefused) - LastRefusalsKept; n > 0 {
		s.lastRefused = append([]Refusal(nil), s.lastRefused[n:]...)
	}
}
