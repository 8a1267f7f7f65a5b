package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

// statusLock takes the transaction-scoped advisory lock of a connection's
// status ($1: its id): its publishers take turns under it, and deleting
// the connection waits for the publication in flight.
const statusLock = `SELECT pg_advisory_xact_lock(hashtextextended('postern-status:' || $1, 0))`

// Publish runs fn with the connection's published state under a
// transaction-scoped advisory lock on the connection, so publishers of one
// connection take turns across the cluster, and stores what fn returns.
// Events are inserted under a second, global lock held to commit: their
// ids become visible in order. Every listener on "events" is told the
// newest id at commit.
func (s *Store) Publish(ctx context.Context, connectionID string, now time.Time,
	fn func(store.Snapshot) (store.PublishedState, []store.EventRecord, error)) ([]store.EventRecord, error) {
	var out []store.EventRecord
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, statusLock, connectionID); err != nil {
			return err
		}
		snap, err := snapshot(ctx, tx, connectionID, now)
		if err != nil {
			return err
		}
		next, events, err := fn(snap)
		if err != nil {
			return err
		}
		if snap.Known && next == snap.Prev && len(events) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO connection_state (connection_id, tunnel, auth, allowlist, flapping, duplicate) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (connection_id) DO UPDATE SET tunnel = EXCLUDED.tunnel, auth = EXCLUDED.auth,
				allowlist = EXCLUDED.allowlist, flapping = EXCLUDED.flapping, duplicate = EXCLUDED.duplicate`,
			connectionID, next.Tunnel, next.Auth, next.Allowlist, next.Flapping, next.Duplicate); err != nil {
			return err
		}
		out, err = insertEvents(ctx, tx, events)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publish status of %q: %w", connectionID, err)
	}
	return out, nil
}

// snapshot reads, in the publisher's transaction, everything a
// connection's status is computed from.
func snapshot(ctx context.Context, tx pgx.Tx, connectionID string, now time.Time) (store.Snapshot, error) {
	var snap store.Snapshot
	c, err := scanConnection(tx.QueryRow(ctx, `SELECT `+connectionColumns+` FROM connections WHERE id = $1`, connectionID))
	if snap.Connection, err = one(c, err, "connection", "status snapshot", connectionID); err != nil {
		return snap, err
	}
	err = tx.QueryRow(ctx, `SELECT tunnel, auth, allowlist, flapping, duplicate FROM connection_state WHERE connection_id = $1`, connectionID).
		Scan(&snap.Prev.Tunnel, &snap.Prev.Auth, &snap.Prev.Allowlist, &snap.Prev.Flapping, &snap.Prev.Duplicate)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return snap, err
	default:
		snap.Known = true
	}
	if snap.Presence, err = queryPresence(ctx, tx, connectionID, now); err != nil {
		return snap, err
	}
	if snap.Failure, err = queryFailure(ctx, tx, connectionID); err != nil {
		return snap, err
	}
	snap.Recent, err = recentTunnelEvents(ctx, tx, connectionID)
	return snap, err
}

// recentTunnelEvents reads the connection's newest tunnel events, oldest
// first.
func recentTunnelEvents(ctx context.Context, tx pgx.Tx, connectionID string) ([]store.EventRecord, error) {
	rows, err := tx.Query(ctx, `SELECT id, connection_id, workspace, created_at, body FROM (
			SELECT * FROM status_events WHERE connection_id = $1 AND body->>'type' = 'tunnel' ORDER BY id DESC LIMIT $2
		) recent ORDER BY id`, connectionID, store.RecentTunnelEvents)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanEvent)
}

func scanEvent(r pgx.CollectableRow) (store.EventRecord, error) {
	var e store.EventRecord
	err := r.Scan(&e.ID, &e.ConnectionID, &e.Workspace, &e.At, &e.Body)
	e.At = e.At.UTC()
	return e, err
}

// insertEvents stores events and their deliveries, and notifies the
// listeners of "events" of the newest id (delivered at commit).
func insertEvents(ctx context.Context, tx pgx.Tx, events []store.EventRecord) ([]store.EventRecord, error) {
	if len(events) == 0 {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, eventsLockID); err != nil {
		return nil, err
	}
	out := make([]store.EventRecord, len(events))
	for i, e := range events {
		if err := tx.QueryRow(ctx, `INSERT INTO status_events (connection_id, workspace, body, created_at)
			VALUES ($1, $2, $3, coalesce($4, now())) RETURNING id`,
			e.ConnectionID, e.Workspace, e.Body, optTime(e.At)).Scan(&e.ID); err != nil {
			return nil, err
		}
		for _, r := range e.Receivers {
			if _, err := tx.Exec(ctx, `INSERT INTO webhook_deliveries (event_id, receiver, next_at) VALUES ($1, $2, now())`, e.ID, r); err != nil {
				return nil, err
			}
		}
		out[i] = e
	}
	_, err := tx.Exec(ctx, `SELECT pg_notify('postern_events', $1)`, strconv.FormatInt(out[len(out)-1].ID, 10))
	return out, err
}

// EventsAfter returns up to limit events with an id above after, in
// order, and the smallest id still kept (0 when none is).
func (s *Store) EventsAfter(ctx context.Context, after int64, limit int) ([]store.EventRecord, int64, error) {
	var first *int64
	if err := s.pool.QueryRow(ctx, `SELECT min(id) FROM status_events`).Scan(&first); err != nil {
		return nil, 0, fmt.Errorf("events after %d: %w", after, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, connection_id, workspace, body FROM status_events
		WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("events after %d: %w", after, err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.EventRecord, error) {
		var e store.EventRecord
		return e, r.Scan(&e.ID, &e.ConnectionID, &e.Workspace, &e.Body)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("events after %d: %w", after, err)
	}
	if first == nil {
		return events, 0, nil
	}
	return events, *first, nil
}

// NewestEvent is the id of the newest event kept, 0 when none is.
func (s *Store) NewestEvent(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM status_events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("newest event: %w", err)
	}
	return id, nil
}

// ClaimDeliveries takes up to limit due deliveries to the receivers named
// until until: rows another node holds are skipped, not waited for.
// Workspaces take turns: each one's oldest due delivery to a receiver
// comes before any workspace's second, so a workspace with a backlog
// cannot hold back another's events, on any node.
func (s *Store) ClaimDeliveries(ctx context.Context, receivers []string, limit int, until time.Time) ([]store.Delivery, error) {
	var out []store.Delivery
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH due AS (
				SELECT d.event_id, d.receiver,
					row_number() OVER (PARTITION BY e.workspace, d.receiver ORDER BY d.event_id) AS turn
				FROM webhook_deliveries d JOIN status_events e ON e.id = d.event_id
				WHERE NOT d.done AND d.next_at <= now() AND d.receiver = ANY($2))
			SELECT d.event_id, d.receiver, d.attempts, e.body
			FROM webhook_deliveries d
				JOIN due ON due.event_id = d.event_id AND due.receiver = d.receiver
				JOIN status_events e ON e.id = d.event_id
			WHERE NOT d.done AND d.next_at <= now()
			ORDER BY due.turn, d.event_id LIMIT $1 FOR UPDATE OF d SKIP LOCKED`, limit, receivers)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Delivery, error) {
			var d store.Delivery
			return d, r.Scan(&d.EventID, &d.Receiver, &d.Attempts, &d.Body)
		})
		if err != nil {
			return err
		}
		for _, d := range out {
			if _, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET next_at = $3 WHERE event_id = $1 AND receiver = $2`,
				d.EventID, d.Receiver, until); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	return out, nil
}

// FinishDelivery marks a delivery done, or schedules its next attempt.
func (s *Store) FinishDelivery(ctx context.Context, d store.Delivery, done bool, next time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET done = $3, attempts = attempts + 1, next_at = $4
		WHERE event_id = $1 AND receiver = $2`, d.EventID, d.Receiver, done, next)
	if err != nil {
		return fmt.Errorf("finish delivery of event %d: %w", d.EventID, err)
	}
	return nil
}

// Notify sends payload to every node listening on channel.
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// Listen takes one connection out of the pool for itself, listens on the
// channels and hands every notification to fn until ctx ends or the
// connection fails.
func (s *Store) Listen(ctx context.Context, channels []string, ready func(), fn func(channel, payload string)) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range channels {
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		fn(n.Channel, n.Payload)
	}
}
