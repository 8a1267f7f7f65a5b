package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

// pruneLock takes the transaction-scoped advisory lock a pruning batch
// holds, so that one node of a cluster prunes at a time; the others find
// it taken and leave. It is named by the schema, so relays of different
// schemas in one database do not wait for each other.
const pruneLock = `SELECT pg_try_advisory_xact_lock(hashtextextended('postern-prune:' || current_schema(), 0))`

// pruneBatch bounds one pruning transaction.
const pruneBatch = 5000

// optTime is t, or NULL for the zero time (the database's now()).
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// AppendEvents stores a single node's status events in one transaction.
// A cluster node never calls it: Publish stores the cluster's events.
func (s *Store) AppendEvents(ctx context.Context, events []store.EventRecord) error {
	if len(events) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for _, e := range events {
			if _, err := tx.Exec(ctx, `INSERT INTO status_events (connection_id, workspace, body, created_at)
				VALUES ($1, $2, $3, coalesce($4, now()))`, e.ConnectionID, e.Workspace, e.Body, optTime(e.At)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append %d events: %w", len(events), err)
	}
	return nil
}

// ConnectionHistory returns the newest limit events of a connection at or
// after since, oldest first.
func (s *Store) ConnectionHistory(ctx context.Context, connectionID string, since time.Time, limit int) ([]store.EventRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, connection_id, workspace, created_at, body FROM (
			SELECT * FROM status_events WHERE connection_id = $1 AND created_at >= $2 ORDER BY id DESC LIMIT $3
		) newest ORDER BY id`, connectionID, since, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", connectionID, err)
	}
	out, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", connectionID, err)
	}
	if out == nil {
		out = []store.EventRecord{}
	}
	return out, nil
}

// PruneEvents deletes events older than before in batches, each its own
// transaction under pruneLock: a node that finds the lock held stops,
// as another node is pruning. Each existing connection's newest event of
// each type stays (a deleted connection has no state they would date).
// Webhook deliveries of a deleted event go with it.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		held := false
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, pruneLock).Scan(&held); err != nil || !held {
				return err
			}
			tag, err := tx.Exec(ctx, `DELETE FROM status_events WHERE id IN (
				SELECT e.id FROM status_events e WHERE e.created_at < $1
				AND (EXISTS (SELECT 1 FROM status_events n WHERE n.connection_id = e.connection_id AND n.id > e.id
						AND n.body->>'type' = e.body->>'type')
					OR NOT EXISTS (SELECT 1 FROM connections c WHERE c.id = e.connection_id))
				ORDER BY e.id LIMIT $2)`, before, pruneBatch)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("prune events: %w", err)
		}
		total += n
		if !held || n < pruneBatch {
			return total, nil
		}
	}
}
