package status

import (
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// TunnelFlapping is the tunnel_status of a connection whose tunnel keeps
// going up and down; see FlapPolicy.
const TunnelFlapping = "flapping"

// FlapPolicy tells a flapping tunnel: one that went down (disconnected)
// and came back more than Threshold times within Window, counting each
// move into or out of disconnected. Moves between connected and degraded
// alone are not flapping: a rolling restart of the relay, or an agent
// moving a tunnel to another node, takes away one of its tunnels for a
// moment while another stays up. Each of those moves is a transition and goes into the history;
// but once the tunnel is flapping, one event (from its last announced
// state to "flapping") stands for them, and the moves that follow are
// recorded as suppressed, not announced. It stops flapping, with one event
// from "flapping" to the state it is in, once no move happened for half
// of Window, or at once when it is revoked; its count of moves then
// starts afresh. A zero Threshold turns the policy off.
type FlapPolicy struct {
	Threshold int
	Window    time.Duration
}

// Bounds of a FlapPolicy: a threshold a snapshot's recent events can
// show, and a window the clock can watch.
const (
	MaxFlapThreshold = store.RecentTunnelEvents - 1
	MinFlapWindow    = time.Second
)

// flapStates are the tunnel states a flapping tunnel moves among.
var flapStates = map[string]bool{TunnelConnected: true, TunnelDegraded: true, TunnelDisconnected: true}

// isFlap reports whether a tunnel move counts towards flapping: one into
// or out of disconnected.
func isFlap(from, to string) bool {
	return from != to && flapStates[from] && flapStates[to] && (from == TunnelDisconnected || to == TunnelDisconnected)
}

// apply decides the flapping state after a recomputation that moved the
// published state from prev to next with events evs; recent are the
// connection's newest tunnel events before it. It returns the new
// flapping state and the events to publish: a tunnel move while flapping
// is marked Suppressed, and entering or leaving adds one event made by
// mk.
func (p FlapPolicy) apply(prev, next store.PublishedState, evs, recent []api.Event, now time.Time,
	mk func(from, to string) api.Event) (bool, []api.Event) {
	on := p.Threshold > 0 && p.Window > 0
	moved := prev.Tunnel != next.Tunnel
	flap := isFlap(prev.Tunnel, next.Tunnel)
	times := flapTimes(recent, now.Add(-p.Window))
	if flap {
		times = append(times, now)
	}
	if prev.Flapping {
		if moved {
			suppressTunnel(evs)
		}
		settled := len(times) == 0 || now.Sub(times[len(times)-1]) >= p.Window/2
		// A move out of the tunnel states (a revocation) ends flapping at
		// once; one between connected and degraded is part of it.
		if !on || (moved && !flapStates[next.Tunnel]) || settled {
			return false, append(evs, mk(TunnelFlapping, next.Tunnel))
		}
		return true, evs
	}
	if on && flap && len(times) > p.Threshold {
		suppressTunnel(evs)
		return true, append(evs, mk(prev.Tunnel, TunnelFlapping))
	}
	return false, evs
}

// flapTimes are the times of the tunnel moves among recent that count
// towards flapping and happened after since, oldest first. The count
// starts afresh when flapping ends, so a tunnel that just settled is not
// flapping again at its next move.
func flapTimes(recent []api.Event, since time.Time) []time.Time {
	var out []time.Time
	for _, e := range recent {
		switch {
		case e.Type != api.EventTunnel:
		case e.From == TunnelFlapping:
			out = out[:0]
		case isFlap(e.From, e.To) && e.Time.After(since):
			out = append(out, e.Time)
		}
	}
	return out
}

func suppressTunnel(evs []api.Event) {
	for i := range evs {
		if evs[i].Type == api.EventTunnel {
			evs[i].Suppressed = true
		}
	}
}
