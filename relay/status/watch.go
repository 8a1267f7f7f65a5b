package status

import (
	"context"
	"sync"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Status events. The keeper remembers, per connection, the tunnel, auth
// and allowlist status it last published and recomputes them with Status
// whenever something that feeds them happens: a tunnel registered or
// removed, an agent token refused, a revocation, an agent reporting a
// different allowlist, and the passing of time (a Health overdue, an auth
// failure ageing out of AuthFailureWindow). Only real changes become
// events.

// watched is what the node last published for one connection, and the
// store row its status is computed from.
type watched struct {
	conn      store.Connection
	tunnel    string
	auth      string
	allowlist string
}

// watch holds the per-connection state. Its lock serializes every
// recomputation, so events of one connection leave in the order their
// causes happened.
type watch struct {
	mu    sync.Mutex
	conns map[string]*watched
}

// mergeRow folds a newer read of a connection's row into the one kept:
// revocation and a first connection never go back, whatever order two
// concurrent reads arrive in.
func mergeRow(kept, fresh store.Connection) store.Connection {
	if fresh.RevokedAt == nil {
		fresh.RevokedAt = kept.RevokedAt
	}
	if fresh.FirstConnectedAt == nil {
		fresh.FirstConnectedAt = kept.FirstConnectedAt
	}
	return fresh
}

// Watch starts tracking a connection from the row given, before a change
// to it is made, so that the change has a "from". A connection already
// tracked only takes the row's news.
func (k *Keeper) Watch(c store.Connection) {
	k.watch.mu.Lock()
	defer k.watch.mu.Unlock()
	k.watchLocked(c, time.Now())
}

func (k *Keeper) watchLocked(c store.Connection, now time.Time) *watched {
	if k.watch.conns == nil {
		k.watch.conns = make(map[string]*watched)
	}
	if w := k.watch.conns[c.ID]; w != nil {
		w.conn = mergeRow(w.conn, c)
		return w
	}
	st := k.Status(c, nil, now)
	w := &watched{conn: c, tunnel: st.TunnelStatus, auth: st.AuthStatus, allowlist: st.AllowlistStatus}
	k.watch.conns[c.ID] = w
	return w
}

// Changed recomputes a tracked connection's status and publishes what
// changed.
func (k *Keeper) Changed(connID string) {
	k.watch.mu.Lock()
	defer k.watch.mu.Unlock()
	if w := k.watch.conns[connID]; w != nil {
		k.publishChanges(w, time.Now())
	}
}

// Revoked publishes the transitions of a revocation; c is the row the
// store returned after revoking.
func (k *Keeper) Revoked(c store.Connection) {
	k.watch.mu.Lock()
	defer k.watch.mu.Unlock()
	now := time.Now()
	k.publishChanges(k.watchLocked(c, now), now)
}

// TokenFailure records a refused agent token against its connection and
// publishes auth failing when that is news. It fits auth.TokenFailure.
func (k *Keeper) TokenFailure(ctx context.Context, connID, msg string, at time.Time) {
	k.watch.mu.Lock()
	known := k.watch.conns[connID] != nil
	k.watch.mu.Unlock()
	if !known {
		c, err := k.store.GetConnection(ctx, connID)
		if err != nil {
			k.log.Warn("status events: look up connection", "connection", connID, "err", err)
		} else {
			k.Watch(c)
		}
	}
	k.failures.record(connID, msg, at)
	k.Changed(connID)
}

// healthReported recomputes status after a Health when the agent's
// allowlist changed, or when the tunnel was degraded and a Health may be
// what it was waiting for.
func (k *Keeper) healthReported(connID string, prev, next string) {
	k.watch.mu.Lock()
	defer k.watch.mu.Unlock()
	w := k.watch.conns[connID]
	if w != nil && (prev != next || w.tunnel == TunnelDegraded) {
		k.publishChanges(w, time.Now())
	}
}

// publishChanges compares the status now with what was published last.
// The caller holds k.watch.mu.
func (k *Keeper) publishChanges(w *watched, now time.Time) {
	if w.conn.FirstConnectedAt == nil {
		// The row was read before this node's first tunnel of the
		// connection was stored; a live session settles it.
		for _, sess := range k.sessions(w.conn.ID) {
			at := sess.ConnectedAt
			w.conn.FirstConnectedAt = &at
			break
		}
	}
	st := k.Status(w.conn, nil, now)
	changes := []struct {
		typ      string
		kept     *string
		from, to string
	}{
		{api.EventTunnel, &w.tunnel, w.tunnel, st.TunnelStatus},
		{api.EventAuth, &w.auth, w.auth, st.AuthStatus},
		{api.EventAllowlist, &w.allowlist, w.allowlist, st.AllowlistStatus},
	}
	for _, ch := range changes {
		if ch.from == ch.to {
			continue
		}
		*ch.kept = ch.to
		e := k.bus.Publish(api.Event{
			Type:              ch.typ,
			ConnectionID:      w.conn.ID,
			Workspace:         w.conn.Workspace,
			Time:              now.UTC(),
			From:              ch.from,
			To:                ch.to,
			Reason:            st.Reason,
			ProviderErrorCode: st.ProviderErrorCode,
		})
		k.log.Debug("status event", "id", e.ID, "type", e.Type, "connection", e.ConnectionID,
			"from", e.From, "to", e.To, "reason", e.Reason)
	}
}

// recheckAll publishes the transitions that only the clock causes: a
// tunnel whose Health is overdue turns degraded, an auth failure older
// than AuthFailureWindow stops counting.
func (k *Keeper) recheckAll(now time.Time) {
	k.watch.mu.Lock()
	defer k.watch.mu.Unlock()
	for _, w := range k.watch.conns {
		if w.tunnel == TunnelConnected || w.tunnel == TunnelDegraded || w.auth == AuthFailing {
			k.publishChanges(w, now)
		}
	}
}

// Run publishes the transitions only the clock causes until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(k.clockPeriod())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.recheckAll(now)
		}
	}
}

// clockPeriod is fine enough to notice an overdue Health or an expired
// auth failure well within one heartbeat, and coarse enough to cost
// nothing.
func (k *Keeper) clockPeriod() time.Duration {
	p := min(k.cfg.HeartbeatInterval, k.cfg.AuthFailureWindow) / 4
	return min(max(p, 50*time.Millisecond), time.Second)
}
