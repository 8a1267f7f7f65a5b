package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	landed := 0 // tries in a row that found no node free of another tunnel
	for attempt := 0; ; attempt++ {
		u := urls[(slot+attempt)%len(urls)]
		log := a.log.With("tunnel", slot, "relay", tunnel.Redact(u))
		up, err := a.runTunnel(ctx, slot, u, landed < MaxSameNodeTries, log)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errSameNode):
			landed++
			bo.Reset() // that node is well; the next try may land elsewhere
		case up:
			landed = 0
			bo.Reset()
		case a.TunnelsUp() > 0:
			landed++ // no other node took this try either
		}
		if !a.pauseAfter(ctx, err, log) || !bo.Wait(ctx) {
			return
		}
	}
}

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
// holds the same node: then it reports false. Checking and recording under
// one lock keeps two slots landing at once from both staying.
func (a *Agent) claim(slot int, info tunnelInfo, spread bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for s, t := range a.tunnels {
		if spread && s != slot && t.NodeID == info.NodeID {
			return false
		}
	}
	a.tunnels[slot] = info
	return true
}

// pauseAfter logs why a tunnel ended and waits whatever pause the relay's
// refusal calls for. It reports false when ctx ended first.
func (a *Agent) pauseAfter(ctx context.Context, err error, log *slog.Logger) bool {
	var re *tunnel.UpgradeError
	switch {
	case errors.As(err, &re):
		log.Error("relay refused the tunnel; will keep retrying", "status", re.StatusCode, "reason", refusalReason(re), "message", refusalMessage(re))
		pause := min(re.RetryAfter(), maxRetryAfterPause) // the relay asked for a pause (rate limited)
		if re.StatusCode == http.StatusUnauthorized {
			// A refused token will not fix itself in a second; retrying
			// slowly keeps this address under the relay's limit on
			// refused credentials, so doctor still sees the reason.
			pause = max(pause, a.opts.RefusedTokenPause)
		}
		if pause > 0 {
			return backoff.Sleep(ctx, pause)
		}
	case errors.Is(err, session.ErrGoAway), errors.Is(err, errSameNode):
		log.Info("tunnel down; reconnecting", "err", err)
	case err != nil:
		log.Warn("tunnel down; reconnecting", "err", err)
	}
	return true
}

// runTunnel opens one tunnel session and serves it until it takes no new
// stream. up reports whether the handshake completed (so the caller can
// reset its backoff). After a GoAway the session drains in the background
// while the slot dials a replacement; Run waits for it.
// With spread, a tunnel that lands on a node another slot holds, while the
// cluster has more than one, is closed at once (errSameNode).
func (a *Agent) runTunnel(ctx context.Context, slot int, base *url.URL, spread bool, log *slog.Logger) (up bool, err error) {
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
	})
	if err != nil {
		return false, err
	}
	w := s.Welcome()
	if !a.claim(slot, tunnelInfo{URL: tunnel.Redact(base), NodeID: w.NodeID, ConnectedAt: time.Now()}, spread && w.Nodes > 1) {
		_ = s.Close()
		return false, fmt.Errorf("%w (node %s of %d)", errSameNode, w.NodeID, w.Nodes)
	}
	err = s.Serve(ctx)
	a.setTunnel(slot, nil)
	if errors.Is(err, session.ErrGoAway) {
		s.Logger().Info("relay sent goaway: dialing a replacement while open streams drain")
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
