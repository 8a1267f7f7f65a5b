package status

import (
	"context"
	"time"

	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/store"
)

// Status events. The keeper remembers, per connection, the tunnel, auth
// and allowlist status it last published and recomputes them with Status
// whenever something that feeds them happens: a tunnel registered or
// removed, an agent token refused, a revocation, an agent reporting a
// different allowlist, and the passing of time (a Health overdue, an auth
// failure ageing out of AuthFailureWindow). Only real changes become
// events.

// Watch starts tracking a connection from the row given, before a change
// to it is made, so that the change has a "from". A connection already
// tracked only takes the row's news.
func (k *Keeper) Watch(ctx context.Context, c store.Connection) {
	if err := k.book.Track(ctx, c, k.judge(time.Now())); err != nil {
		k.log.Warn("status events: track connection", "connection", c.ID, "err", err)
	}
}

// Changed recomputes a tracked connection's status and publishes what
// changed.
func (k *Keeper) Changed(ctx context.Context, connID string) {
	k.publish(ctx, connID, nil, time.Now())
}

// Revoked publishes the transitions of a revocation; c is the row the
// store returned after revoking.
func (k *Keeper) Revoked(ctx context.Context, c store.Connection) {
	k.publish(ctx, c.ID, &c, time.Now())
}

// Forget stops tracking a deleted connection; c's store row is gone, so
// nothing of it is published again.
func (k *Keeper) Forget(connID string) { k.book.Forget(connID) }

func (k *Keeper) publish(ctx context.Context, connID string, fresh *store.Connection, now time.Time) {
	if err := k.book.Publish(ctx, connID, fresh, k.judge(now)); err != nil {
		k.log.Warn("status events: publish", "connection", connID, "err", err)
	}
}

// TokenFailure records a refused agent token against its connection and
// publishes auth failing when that is news. It fits auth.TokenFailure.
func (k *Keeper) TokenFailure(ctx context.Context, connID, msg string, at time.Time) {
	if _, known := k.book.Published(connID); !known {
		c, err := k.store.GetConnection(ctx, connID)
		if err != nil {
			k.log.Warn("status events: look up connection", "connection", connID, "err", err)
		} else {
			k.Watch(ctx, c)
		}
	}
	if err := k.book.NoteFailure(ctx, connID, msg, at, k.cfg.AuthFailureWindow); err != nil {
		k.log.Warn("status events: record auth failure", "connection", connID, "err", err)
	}
	k.Changed(ctx, connID)
}

// healthReported recomputes status after a Health when the agent's
// allowlist changed, or when the tunnel was degraded and a Health may be
// what it was waiting for.
func (k *Keeper) healthReported(ctx context.Context, connID string, prev, next string) {
	st, known := k.book.Published(connID)
	if known && (prev != next || st.Tunnel == TunnelDegraded) {
		k.Changed(ctx, connID)
	}
}

// recheckAll publishes the transitions that only the clock causes: a
// tunnel whose Health is overdue turns degraded, an auth failure older
// than AuthFailureWindow stops counting.
func (k *Keeper) recheckAll(ctx context.Context, now time.Time) {
	for _, id := range k.book.Tracked() {
		k.publish(ctx, id, nil, now)
	}
}

// Run publishes the transitions only the clock causes until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	tick.Every(ctx, k.clockPeriod(), func(now time.Time) { k.recheckAll(ctx, now) })
}

// clockPeriod is fine enough to notice an overdue Health or an expired
// auth failure well within one heartbeat, and coarse enough to cost
// nothing.
func (k *Keeper) clockPeriod() time.Duration {
	p := min(k.cfg.HeartbeatInterval, k.cfg.AuthFailureWindow) / 4
	return min(max(p, 50*time.Millisecond), time.Second)
}
