package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

var _ store.Cluster = (*Store)(nil)

// eventsLockID serializes the insertion of status events, so that event
// ids become visible in the order they were assigned and a reader that
// resumes after an id never misses a later-committed smaller one. (The
// bytes spell "postern\x02".)
const eventsLockID int64 = 0x706f737465726e02

// UpsertNode registers or renews a node.
func (s *Store) UpsertNode(ctx context.Context, n store.Node) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO relay_nodes (id, peer_url, draining, started_at, renewed_at, lease_until)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET peer_url = EXCLUDED.peer_url, draining = EXCLUDED.draining,
			started_at = EXCLUDED.started_at, renewed_at = EXCLUDED.renewed_at, lease_until = EXCLUDED.lease_until`,
		n.ID, n.PeerURL, n.Draining, n.StartedAt, n.RenewedAt, n.LeaseUntil)
	if err != nil {
		return fmt.Errorf("upsert node %q: %w", n.ID, err)
	}
	return nil
}

// RemoveNode drops a node and every session it held.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM agent_sessions WHERE node_id = $1`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM relay_nodes WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove node %q: %w", id, err)
	}
	return nil
}

// Nodes lists the nodes whose lease has not lapsed, with their open
// sessions counted.
func (s *Store) Nodes(ctx context.Context, now time.Time) ([]store.Node, error) {
	rows, err := s.pool.Query(ctx, `SELECT n.id, n.peer_url, n.draining, n.started_at, n.renewed_at, n.lease_until,
			(SELECT count(*) FROM agent_sessions a WHERE a.node_id = n.id AND NOT a.closed AND a.lease_until > $1)
		FROM relay_nodes n WHERE n.lease_until > $1 ORDER BY n.id`, now)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	nodes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Node, error) {
		var n store.Node
		err := r.Scan(&n.ID, &n.PeerURL, &n.Draining, &n.StartedAt, &n.RenewedAt, &n.LeaseUntil, &n.Sessions)
		n.StartedAt, n.RenewedAt, n.LeaseUntil = n.StartedAt.UTC(), n.RenewedAt.UTC(), n.LeaseUntil.UTC()
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// presenceUpsert writes sessions given as parallel arrays. A row is
// changed only by a newer write, and a tombstone only by a newer
// tombstone: closed is sticky.
const presenceUpsert = `INSERT INTO agent_sessions AS a
		(id, connection_id, node_id, token_id, seq, closed, draining, view, lease_until)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
		$6::boolean[], $7::boolean[], $8::jsonb[], $9::timestamptz[])
	ON CONFLICT (id) DO UPDATE SET node_id = EXCLUDED.node_id, token_id = EXCLUDED.token_id,
		seq = EXCLUDED.seq, closed = EXCLUDED.closed, draining = EXCLUDED.draining,
		view = EXCLUDED.view, lease_until = EXCLUDED.lease_until
	WHERE a.seq < EXCLUDED.seq AND (NOT a.closed OR EXCLUDED.closed)`

// PutPresence stores p unless a newer write or its tombstone is there.
func (s *Store) PutPresence(ctx context.Context, p store.Presence) error {
	n, err := s.putPresences(ctx, []store.Presence{p}, false)
	if err != nil {
		return fmt.Errorf("put presence %q: %w", p.SessionID, err)
	}
	if n == 0 {
		return fmt.Errorf("put presence %q: %w", p.SessionID, store.ErrStale)
	}
	return nil
}

// PutPresences stores many sessions in one statement; stale ones are
// skipped.
func (s *Store) PutPresences(ctx context.Context, ps []store.Presence) error {
	if len(ps) == 0 {
		return nil
	}
	if _, err := s.putPresences(ctx, ps, false); err != nil {
		return fmt.Errorf("put %d presences: %w", len(ps), err)
	}
	return nil
}

// ClosePresence leaves a tombstone for p's session at p.Seq, written even
// if the session's own row never arrived.
func (s *Store) ClosePresence(ctx context.Context, p store.Presence) error {
	if _, err := s.putPresences(ctx, []store.Presence{p}, true); err != nil {
		return fmt.Errorf("close presence %q: %w", p.SessionID, err)
	}
	return nil
}

func (s *Store) putPresences(ctx context.Context, ps []store.Presence, closed bool) (int64, error) {
	n := len(ps)
	ids, conns, nodes, tokens := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	seqs, closes, drains := make([]int64, n), make([]bool, n), make([]bool, n)
	views, leases := make([][]byte, n), make([]time.Time, n)
	for i, p := range ps {
		ids[i], conns[i], nodes[i], tokens[i] = p.SessionID, p.ConnectionID, p.NodeID, p.TokenID
		seqs[i], closes[i], drains[i], leases[i] = p.Seq, closed, p.Draining, p.LeaseUntil
		views[i] = p.View
		if len(views[i]) == 0 {
			views[i] = []byte("{}")
		}
	}
	tag, err := s.pool.Exec(ctx, presenceUpsert, ids, conns, nodes, tokens, seqs, closes, drains, views, leases)
	return tag.RowsAffected(), err
}

// RenewPresence extends the lease of every open session of a node.
func (s *Store) RenewPresence(ctx context.Context, nodeID string, until time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE agent_sessions SET lease_until = $2 WHERE node_id = $1 AND NOT closed`, nodeID, until)
	if err != nil {
		return fmt.Errorf("renew presence of node %q: %w", nodeID, err)
	}
	return nil
}

// PresenceOf lists the open, unexpired sessions of a connection.
func (s *Store) PresenceOf(ctx context.Context, connectionID string, now time.Time) ([]store.Presence, error) {
	ps, err := queryPresence(ctx, s.pool, connectionID, now)
	if err != nil {
		return nil, fmt.Errorf("presence of %q: %w", connectionID, err)
	}
	return ps, nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func queryPresence(ctx context.Context, q querier, connectionID string, now time.Time) ([]store.Presence, error) {
	rows, err := q.Query(ctx, `SELECT id, connection_id, node_id, token_id, seq, draining, view, lease_until
		FROM agent_sessions WHERE connection_id = $1 AND NOT closed AND lease_until > $2 ORDER BY id`, connectionID, now)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Presence, error) {
		var p store.Presence
		err := r.Scan(&p.SessionID, &p.ConnectionID, &p.NodeID, &p.TokenID, &p.Seq, &p.Draining, &p.View, &p.LeaseUntil)
		p.LeaseUntil = p.LeaseUntil.UTC()
		return p, err
	})
}

// ExpirePresence drops lapsed sessions and nodes, and tombstones older
// than keep. Events are the connections' history: PruneEvents ages them
// out.
func (s *Store) ExpirePresence(ctx context.Context, now time.Time, keep time.Duration) ([]string, error) {
	var conns []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM agent_sessions WHERE closed AND lease_until < $1`, now.Add(-keep)); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM agent_sessions WHERE NOT closed AND lease_until < $1 RETURNING connection_id`, now)
		if err != nil {
			return err
		}
		if conns, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM relay_nodes WHERE lease_until < $1`, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("expire presence: %w", err)
	}
	return conns, nil
}

// NoteFailure records a refused agent token against a connection; the
// count starts over when the previous refusal is within or more before at.
func (s *Store) NoteFailure(ctx context.Context, connectionID, message string, at time.Time, within time.Duration) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO auth_failures (connection_id, at, count, message) VALUES ($1, $2, 1, $3)
		ON CONFLICT (connection_id) DO UPDATE SET at = greatest(auth_failures.at, EXCLUDED.at),
			count = CASE WHEN EXCLUDED.at - auth_failures.at < $4::bigint * interval '1 microsecond'
				THEN auth_failures.count + 1 ELSE 1 END,
			message = EXCLUDED.message`, connectionID, at, message, within.Microseconds())
	if err != nil {
		return fmt.Errorf("note auth failure of %q: %w", connectionID, err)
	}
	return nil
}

// LastFailure returns a connection's last refused agent token.
func (s *Store) LastFailure(ctx context.Context, connectionID string) (store.Failure, error) {
	f, err := queryFailure(ctx, s.pool, connectionID)
	if err != nil {
		return store.Failure{}, fmt.Errorf("last auth failure of %q: %w", connectionID, err)
	}
	return f, nil
}

func queryFailure(ctx context.Context, q querier, connectionID string) (store.Failure, error) {
	var f store.Failure
	err := q.QueryRow(ctx, `SELECT at, count, message FROM auth_failures WHERE connection_id = $1`, connectionID).
		Scan(&f.At, &f.Count, &f.Message)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Failure{}, nil
	}
	f.At = f.At.UTC()
	return f, err
}

// Watched lists the connections with a published state.
func (s *Store) Watched(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT connection_id FROM connection_state ORDER BY connection_id`)
	if err != nil {
		return nil, fmt.Errorf("watched connections: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("watched connections: %w", err)
	}
	return ids, nil
}
