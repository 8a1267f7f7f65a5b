package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/postern/postern/agent/backoff"
	"github.com/postern/postern/agent/session"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// maxRetryAfterPause caps a pause the relay asks for.
const maxRetryAfterPause = 10 * time.Minute

// keepTunnel runs one tunnel slot: connect, serve, and on any end
// reconnect after a jittered delay. Slots start on different relay URLs.
func (a *Agent) keepTunnel(ctx context.Context, slot int) {
	bo := backoff.New(a.opts.BackoffBase, a.opts.BackoffMax)
	urls := a.opts.Config.RelayURLs
	sp := &spreading{wait: a.opts.RespreadAfter}
	for attempt := 0; ; attempt++ {
		u := urls[(slot+attempt)%len(urls)]
		log := a.log.With("tunnel", slot, "relay", tunnel.Redact(u))
		up, err := a.runTunnel(ctx, slot, u, sp, log)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errSameNode):
			sp.landed++
			bo.Reset() // that node is well; the next try may land elsewhere
		case errors.Is(err, errRespread):
			sp.landed = 0
			sp.wait = min(sp.wait*2, maxRespreadAfter)
			bo.Reset()
		case up:
			sp.landed = 0
			if !sp.shared {
				sp.wait = a.opts.RespreadAfter
			}
			bo.Reset()
		case a.TunnelsUp() > 0:
			sp.landed++ // no other node took this try either
		}
		// A pause the relay asked for takes the place of the backoff
		// delay: the relay chose when this tunnel should come back.
		paused, ok := a.pauseAfter(ctx, err, log)
		if !ok || !paused && !bo.Wait(ctx) {
			return
		}
	}
}

// spreading is one slot's effort to keep its tunnel on a relay node no
// other slot holds.
type spreading struct {
	landed int           // tries in a row that found no node free of another tunnel
	shared bool          // the tunnel now up settled on a node another slot holds
	wait   time.Duration // how long a settled tunnel serves before trying again
}

// maxRespreadAfter caps the wait between tries to move a tunnel that
// settled on a node another tunnel holds: a cluster whose other nodes stay
// away costs a handful of dials every ten minutes.
const maxRespreadAfter = 10 * time.Minute

// errRespread ends a tunnel that settled on a node another tunnel holds,
// after it served a while: its open streams drain while the slot tries
// again for a node of its own, as after a GoAway.
var errRespread = errors.New("tunnels share a relay node; trying again for a node of its own")

// MaxSameNodeTries is how many tries in a row a tunnel makes to reach a
// relay node no other tunnel of this agent holds, while another tunnel is
// up: a try that lands on a held node, or reaches no node, counts. After
// that it stays where it lands, so a cluster that lost its other nodes
// still gets every tunnel.
const MaxSameNodeTries = 5

// errSameNode ends a tunnel that landed on a node another slot holds,
// while the relay's cluster offers others.
var errSameNode = errors.New("the tunnel landed on a relay node another tunnel already holds")

// claim records the slot's tunnel, unless spread is set and another slot
// holds the same node: then it reports false. shared reports a tunnel
// recorded on a node another slot holds. Checking and recording under one
// lock keeps two slots landing at once from both staying.
func (a *Agent) claim(slot int, info tunnelInfo, spread bool) (ok, shared bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for s, t := range a.tunnels {
		if s != slot && t.NodeID == info.NodeID {
			if spread {
				return false, false
			}
			shared = true
		}
	}
	a.tunnels[slot] = info
	a.noteUpLocked()
	return true, shared
}

// runTunnel opens one tunnel session and serves it until it takes no new
// stream. up reports whether the handshake completed (so the caller can
// reset its backoff). After a GoAway the session drains in the background
// while the slot dials a replacement; Run waits for it.
// While sp allows, a tunnel that lands on a node another slot holds, while
// the cluster has more than one, is closed at once (errSameNode); one that
// settled there serves for sp.wait and then drains like after a GoAway
// (errRespread), so the slot tries again for a node of its own.
func (a *Agent) runTunnel(ctx context.Context, slot int, base *url.URL, sp *spreading, log *slog.Logger) (up bool, err error) {
	s, err := session.Open(ctx, session.Options{
		URL:          base,
		HTTPClient:   a.relayClient,
		Token:        a.opts.Token,
		UserAgent:    "postern-agent/" + a.opts.Version,
		Reporter:     reporter{a},
		Handler:      a.streams,
		DrainTimeout: a.opts.DrainTimeout,
		Force:        a.forceCtx.Done(),
		Logger:       log,
		OnNotice:     func(n protocol.Notice) { a.notice(slot, n) },
	})
	if err != nil {
		return false, err
	}
	w := s.Welcome()
	ok, shared := a.claim(slot, tunnelInfo{URL: tunnel.Redact(base), NodeID: w.NodeID, ConnectedAt: time.Now()}, sp.landed < MaxSameNodeTries && w.Nodes > 1)
	if !ok {
		_ = s.Close()
		return false, fmt.Errorf("%w (node %s of %d)", errSameNode, w.NodeID, w.Nodes)
	}
	sp.shared = shared && w.Nodes > 1
	serveCtx := ctx
	if sp.shared {
		s.Logger().Info("tunnel settled on a relay node another tunnel holds; will try again for a node of its own",
			"node", w.NodeID, "nodes", w.Nodes, "in", sp.wait)
		var cancel context.CancelFunc
		serveCtx, cancel = context.WithTimeout(ctx, sp.wait)
		defer cancel()
	}
	err = s.Serve(serveCtx)
	a.setTunnel(slot, nil)
	if sp.shared && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = errRespread
	}
	if errors.Is(err, session.ErrGoAway) || errors.Is(err, errRespread) {
		s.Logger().Info("dialing a replacement while open streams drain", "why", err)
		a.draining.Go(s.Drain)
		return true, err
	}
	s.Drain() // at once when the tunnel failed; bounded after a stop
	return true, err
}

func refusalReason(e *tunnel.UpgradeError) protocol.Reason {
	if e.Refusal == nil {
		return protocol.ReasonUnknown
	}
	return e.Refusal.Reason
}

func refusalMessage(e *tunnel.UpgradeError) string {
	if e.Refusal == nil {
		return e.Error()
	}
	return e.Refusal.Message
}
