package relay

import (
	"time"

	"github.com/postern/postern/protocol"
)

// drain sends GoAway on every tunnel, so agents dial replacements, and
// waits until no proxied stream is open, timeout passes, or the server is
// closed. Sessions that got GoAway take no new streams.
func (s *Server) drain(timeout time.Duration) {
	sessions := s.reg.goAwayAll(protocol.GoAway{Reason: "shutdown", Message: "relay node " + s.cfg.NodeID + " is stopping"})
	if sessions == 0 {
		return
	}
	s.metrics.goaways.Add(float64(sessions))
	s.log.Info("draining: sent goaway to agents", "tunnels", sessions, "timeout", timeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		active := s.reg.activeStreams()
		if active == 0 {
			s.log.Info("drained: no stream open")
			return
		}
		select {
		case <-s.ctx.Done():
			s.log.Warn("drain cut short", "streams_open", active)
			return
		case <-deadline.C:
			s.log.Warn("drain timeout; closing open streams", "streams_open", active)
			return
		case <-tick.C:
		}
	}
}
