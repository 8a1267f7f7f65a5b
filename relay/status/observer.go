package status

import (
	"context"
	"errors"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
)

// errRevokedDuringHandshake ends a session whose connection was revoked
// after its token was checked but before the session was registered.
var errRevokedDuringHandshake = errors.New("connection revoked during the handshake")

// The Keeper is the broker's Observer: it records presence in the store
// and recomputes the status a session's life changes.
var (
	_ broker.Observer = (*Keeper)(nil)
	_ broker.Starter  = (*Keeper)(nil)
)

// SessionStarting records the connection as connected before the
// session is registered: once a stream can be routed to the tunnel, a
// refusal explained afterwards must not call the connection never
// connected.
func (k *Keeper) SessionStarting(ctx context.Context, s *broker.Session) {
	if err := k.store.MarkConnected(ctx, s.ConnectionID, time.Now()); err != nil {
		k.log.Warn("record agent connected", "connection", s.ConnectionID, "err", err)
	}
}

// SessionUp looks again for a revocation of the connection: one stored
// after authentication but handled before registration did not see this
// session. It then publishes the session's start.
//
// The connection was marked connected before (SessionStarting), so that
// no publication, here or on another node, can see the session's end
// without its start and call the connection never connected.
func (k *Keeper) SessionUp(ctx context.Context, s *broker.Session) error {
	c, readErr := k.store.GetConnection(ctx, s.ConnectionID)
	if readErr == nil && c.Revoked() {
		k.Watch(ctx, c)
		return errRevokedDuringHandshake
	}
	if readErr == nil {
		k.Watch(ctx, c) // the "from" of this tunnel's status events
	}
	k.Changed(ctx, s.ConnectionID)
	return nil
}

// SessionHealth publishes what a Health changed.
func (k *Keeper) SessionHealth(s *broker.Session, prev protocol.Allowlist) {
	next := s.Allowlist()
	k.healthReported(context.Background(), s.ConnectionID, prev.Status+" "+prev.SHA256, next.Status+" "+next.SHA256)
}

// SessionSeen advances the connection's last_seen_at.
func (k *Keeper) SessionSeen(ctx context.Context, s *broker.Session, at time.Time) {
	if err := k.store.MarkSeen(ctx, s.ConnectionID, at); err != nil {
		k.log.Warn("record agent last seen", "connection", s.ConnectionID, "err", err)
	}
}

// SessionDown publishes the tunnel's end.
func (k *Keeper) SessionDown(s *broker.Session) { k.Changed(context.Background(), s.ConnectionID) }
