package cluster

import (
	"context"
	"time"

	"github.com/postern/postern/relay/internal/tick"
)

// Channels of the cluster's notifications (PostgreSQL LISTEN/NOTIFY).
// Payloads are ids; whatever else a handler needs it reads from the store.
const (
	// ChannelEvents: a status event was published (payload: its id).
	ChannelEvents = "postern_events"
	// ChannelRevoke: a connection was revoked, or deleted after its
	// revocation; every node forgets what it read of it and cuts its
	// tunnels (payload: connection id).
	ChannelRevoke = "postern_revoke"
	// ChannelTokens: a connection's agent tokens were rotated; every node
	// cuts, at that end, the tunnels of the tokens it expired (payload:
	// connection id, a space, the end in RFC 3339).
	ChannelTokens = "postern_tokens"
	// ChannelKeys: an API key was revoked; every node cuts the streams it
	// opened (payload: key id).
	ChannelKeys = "postern_keys"
	// ChannelSessions: a status page session was signed out; every node
	// refuses its cookie (payload: session id and its end).
	ChannelSessions = "postern_ui_sessions"
	channelNodes    = "postern_nodes"
)

// Listen backoff after the notification connection failed.
const (
	listenRetryBase = 250 * time.Millisecond
	listenRetryMax  = 10 * time.Second
)

// Handle runs fn for every notification on channel; set before Run.
func (n *Node) Handle(channel string, fn func(payload string)) {
	if n.handlers == nil {
		n.handlers = map[string]func(string){}
	}
	n.handlers[channel] = fn
}

// OnResync runs fn each time the node listens again after its
// notification connection failed: whatever was announced meanwhile was
// missed, and fn re-reads what it acts on. Set before Run.
func (n *Node) OnResync(fn func()) { n.onResync = append(n.onResync, fn) }

// Announce notifies every node, this one included, on channel.
func (n *Node) Announce(ctx context.Context, channel, payload string) error {
	return n.st.Notify(ctx, channel, payload)
}

// listenLoop keeps a connection listening to the cluster's channels,
// reconnecting with backoff when it fails. After each (re)connection the
// node catches up on what it may have missed.
func (n *Node) listenLoop(ctx context.Context) {
	channels := []string{ChannelEvents, ChannelRevoke, ChannelTokens, ChannelKeys, ChannelSessions, channelNodes}
	wait := listenRetryBase
	for first := true; ctx.Err() == nil; first = false {
		ready := func() {
			wait = listenRetryBase
			n.book.woken()
			n.refreshNodes(ctx)
			if !first {
				for _, fn := range n.onResync {
					fn()
				}
			}
		}
		err := n.st.Listen(ctx, channels, ready, n.dispatch)
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("cluster notifications interrupted; listening again", "in", wait, "err", err)
		if !tick.Sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, listenRetryMax)
	}
}

func (n *Node) dispatch(channel, payload string) {
	switch channel {
	case ChannelEvents:
		n.book.woken()
	case channelNodes:
		n.refreshNodes(n.ctx)
	}
	if fn := n.handlers[channel]; fn != nil {
		fn(payload)
	}
}
