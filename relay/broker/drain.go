package broker

import (
	"time"

	"github.com/postern/postern/protocol"
)

// drainPoll is how often a drain looks at the streams still open.
const drainPoll = 50 * time.Millisecond

// Drain sends GoAway on every live tunnel, so agents dial replacements,
// and waits until no stream is open, timeout passes, or the broker
// closes. Sessions told to go away take no new streams. It returns how
// many tunnels were told.
func (b *Broker) Drain(timeout time.Duration) int {
	told := b.GoAway()
	if told == 0 {
		return 0
	}
	b.log.Info("draining: sent goaway to agents", "tunnels", told, "timeout", timeout)
	b.WaitStreams(timeout)
	return told
}

// GoAway tells every live tunnel to move (its session then takes new
// streams only as a last resort) and returns how many it told.
func (b *Broker) GoAway() int {
	g := protocol.GoAway{Reason: "shutdown", Message: "relay node " + b.cfg.NodeID + " is stopping"}
	told := 0
	for _, s := range b.reg.all() {
		if s.Closed() || s.draining.Swap(true) {
			continue
		}
		_ = s.Notify(protocol.FrameGoAway, g)
		told++
	}
	return told
}

// WaitStreams waits until no stream is open, timeout passes, or the broker
// closes.
func (b *Broker) WaitStreams(timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		active := b.ActiveStreams()
		if active == 0 {
			b.log.Info("drained: no stream open")
			return
		}
		select {
		case <-b.ctx.Done():
			b.log.Warn("drain cut short", "streams_open", active)
			return
		case <-deadline.C:
			b.log.Warn("drain timeout; closing open streams", "streams_open", active)
			return
		case <-tick.C:
		}
	}
}
