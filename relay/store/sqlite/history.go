package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/postern/postern/relay/store"
)

// pruneBatch bounds one pruning statement, so the single writer is never
// held for long by a large backlog.
const pruneBatch = 5000

// AppendEvents stores a single node's status events in one transaction.
func (s *Store) AppendEvents(ctx context.Context, events []store.EventRecord) error {
	if len(events) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, e := range events {
			at := e.At
			if at.IsZero() {
				at = time.Now()
			}
			ts, err := formatTime(at)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO status_events (connection_id, workspace, body, created_at)
				VALUES (?, ?, ?, ?)`, e.ConnectionID, e.Workspace, string(e.Body), ts); err != nil {
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
	from, err := formatTime(since)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", connectionID, err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, connection_id, workspace, body, created_at FROM (
			SELECT * FROM status_events WHERE connection_id = ? AND created_at >= ? ORDER BY id DESC LIMIT ?
		) ORDER BY id`, connectionID, from, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %q: %w", connectionID, err)
	}
	defer rows.Close()
	out := []store.EventRecord{}
	for rows.Next() {
		var (
			e        store.EventRecord
			body, at string
		)
		if err := rows.Scan(&e.ID, &e.ConnectionID, &e.Workspace, &body, &at); err != nil {
			return nil, fmt.Errorf("history of %q: %w", connectionID, err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("history of %q: %w", connectionID, err)
		}
		e.Body = []byte(body)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history of %q: %w", connectionID, err)
	}
	return out, nil
}

// PruneEvents deletes events older than before, in batches, keeping each
// existing connection's newest event of each type (a deleted connection
// has no state they would date). One node owns a SQLite store, so there
// is no one to take turns with.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	cut, err := formatTime(before)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	var total int64
	for {
		res, err := s.w.ExecContext(ctx, `DELETE FROM status_events WHERE id IN (
			SELECT e.id FROM status_events e WHERE e.created_at < ?1
			AND (EXISTS (SELECT 1 FROM status_events n WHERE n.connection_id = e.connection_id AND n.id > e.id
					AND json_extract(n.body, '$.type') = json_extract(e.body, '$.type'))
				OR NOT EXISTS (SELECT 1 FROM connections c WHERE c.id = e.connection_id))
			ORDER BY e.id LIMIT ?2)`, cut, pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune events: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("prune events: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
