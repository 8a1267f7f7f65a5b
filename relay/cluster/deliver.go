package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/webhook"
)

// Webhook deliveries of a cluster: each event owed to a receiver is one
// row, claimed by one node at a time (FOR UPDATE SKIP LOCKED) for
// claimLease, tried once, then marked done or scheduled again. Every node
// configured with the receiver delivers; none delivers an event twice
// unless its attempt outlived the claim (an attempt is bounded well below
// it). Two nodes may deliver consecutive events at once, so a receiver
// orders them by Postern-Event-Id.
const (
	claimLease   = 30 * time.Second
	claimBatch   = 16
	deliverEvery = 500 * time.Millisecond
)

// Receivers maps the webhooks this node has configured by their id.
type Receivers map[string]*webhook.Receiver

// For lists the ids of the receivers owed an event of workspace.
func (rs Receivers) For(workspace string) []string {
	var out []string
	for id, r := range rs {
		if ws := r.Config().Workspace; ws == "" || ws == workspace {
			out = append(out, id)
		}
	}
	return out
}

func (rs Receivers) ids() []string {
	out := make([]string, 0, len(rs))
	for id := range rs {
		out = append(out, id)
	}
	return out
}

// SetReceivers gives the book the webhooks this node delivers to.
func (b *Book) SetReceivers(rs Receivers) { b.hooks = rs }

// deliverLoop claims and delivers due webhook deliveries until ctx ends.
func (b *Book) deliverLoop(ctx context.Context) {
	if len(b.hooks) == 0 {
		return
	}
	tick.Every(ctx, deliverEvery, func(now time.Time) {
		ds, err := b.node.st.ClaimDeliveries(ctx, b.hooks.ids(), claimBatch, now.Add(claimLease))
		if err != nil {
			return
		}
		for _, d := range ds {
			b.deliver(ctx, d)
		}
	})
}

// deliver makes one attempt of d and records its outcome.
func (b *Book) deliver(ctx context.Context, d store.Delivery) {
	r := b.hooks[d.Receiver]
	if r == nil {
		return // claimed for another receiver: cannot happen, the claim names ours
	}
	var e api.Event
	if err := json.Unmarshal(d.Body, &e); err != nil {
		_ = b.node.st.FinishDelivery(ctx, d, true, time.Now())
		return
	}
	e.ID = formatID(d.EventID)
	body, _ := json.Marshal(e)
	wait, done := r.Attempt(ctx, d.Attempts+1, e.ID, body)
	if err := b.node.st.FinishDelivery(ctx, d, done, time.Now().Add(wait)); err != nil {
		b.node.log.Warn("record webhook delivery", "event_id", e.ID, "err", err)
	}
}
