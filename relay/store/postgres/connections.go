package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

const connectionColumns = `id, workspace, name, created_at, revoked_at, first_connected_at, last_seen_at`

// CreateConnection stores c and its first token t in one transaction.
func (s *Store) CreateConnection(ctx context.Context, c store.Connection, t store.Token) error {
	if t.ConnectionID == "" {
		t.ConnectionID = c.ID
	}
	if t.ConnectionID != c.ID {
		return fmt.Errorf("create connection %q: token belongs to connection %q", c.ID, t.ConnectionID)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO connections (`+connectionColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			c.ID, c.Workspace, c.Name, c.CreatedAt, c.RevokedAt, c.FirstConnectedAt, c.LastSeenAt)
		if err != nil {
			return mapErr(err)
		}
		return insertToken(ctx, tx, t)
	})
	if err != nil {
		return fmt.Errorf("create connection %q: %w", c.ID, err)
	}
	return nil
}

// GetConnection returns the connection with the given id.
func (s *Store) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+connectionColumns+` FROM connections WHERE id = $1`, id)
	c, err := scanConnection(row)
	return one(c, err, "connection", "get connection", id)
}

// ListConnections returns the connections of workspace, or all of them
// when workspace is empty, oldest first.
func (s *Store) ListConnections(ctx context.Context, workspace string) ([]store.Connection, error) {
	q := `SELECT ` + connectionColumns + ` FROM connections`
	var args []any
	if workspace != "" {
		q += ` WHERE workspace = $1`
		args = append(args, workspace)
	}
	q += ` ORDER BY created_at, id`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Connection, error) { return scanConnection(r) })
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	if out == nil {
		out = []store.Connection{}
	}
	return out, nil
}

// RevokeConnection sets revoked_at once; later calls keep the first time.
func (s *Store) RevokeConnection(ctx context.Context, id string, at time.Time) (store.Connection, error) {
	return revoke(ctx, s, "connections", connectionColumns, "connection", scanConnection, id, at)
}

// DeleteConnection deletes a revoked connection and the cluster's rows of
// it: its agent tokens (ON DELETE CASCADE), published state, refused-token
// record and open sessions. It takes the connection's status lock first,
// as Publish does, so a publication in flight finishes before the rows go
// and a later one finds no connection and writes nothing.
//
// Kept: its status events (and the webhook deliveries owed for them),
// which are the event log with a retention of its own (PruneEvents); and
// its closed sessions' tombstones, which stop a late write from reopening
// a session until ExpirePresence drops them.
func (s *Store) DeleteConnection(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, statusLock, id); err != nil {
			return err
		}
		var revoked *time.Time
		err := tx.QueryRow(ctx, `SELECT revoked_at FROM connections WHERE id = $1 FOR UPDATE`, id).Scan(&revoked)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return store.ErrNotFound
		case err != nil:
			return err
		case revoked == nil:
			return store.ErrNotRevoked
		}
		for _, q := range []string{
			`DELETE FROM connection_state WHERE connection_id = $1`,
			`DELETE FROM auth_failures WHERE connection_id = $1`,
			`DELETE FROM agent_sessions WHERE connection_id = $1 AND NOT closed`,
			`DELETE FROM connections WHERE id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete connection %q: %w", id, err)
	}
	return nil
}

// revoke sets revoked_at of record id of table (a record of kind) to at
// unless it is set, and reads the record back with scan.
func revoke[T any](ctx context.Context, s *Store, table, columns, kind string, scan func(pgx.Row) (T, error), id string, at time.Time) (T, error) {
	row := s.pool.QueryRow(ctx, `UPDATE `+table+`
		SET revoked_at = COALESCE(revoked_at, $1)
		WHERE id = $2
		RETURNING `+columns, at, id)
	v, err := scan(row)
	return one(v, err, kind, "revoke "+kind, id)
}

// MarkConnected sets first_connected_at if unset and advances last_seen_at.
func (s *Store) MarkConnected(ctx context.Context, connectionID string, at time.Time) error {
	// GREATEST skips NULLs, so an unset last_seen_at simply becomes $1.
	return s.touch(ctx, "mark connected", "connection", connectionID, at, `UPDATE connections
		SET first_connected_at = COALESCE(first_connected_at, $1),
		    last_seen_at = GREATEST(last_seen_at, $1)
		WHERE id = $2`)
}

// MarkSeen advances last_seen_at; an older time than the stored one is
// ignored, so reports arriving out of order cannot move it back.
func (s *Store) MarkSeen(ctx context.Context, connectionID string, at time.Time) error {
	return s.touch(ctx, "mark seen", "connection", connectionID, at, `UPDATE connections
		SET last_seen_at = GREATEST(last_seen_at, $1)
		WHERE id = $2`)
}

func (s *Store) touch(ctx context.Context, op, kind, id string, at time.Time, q string) error {
	tag, err := s.pool.Exec(ctx, q, at, id)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, id, err)
	}
	if tag.RowsAffected() == 0 {
		return notFound(kind, id)
	}
	return nil
}

// RotateToken adds t and caps the expiry of the connection's other tokens
// at previousValidUntil.
func (s *Store) RotateToken(ctx context.Context, t store.Token, previousValidUntil time.Time) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Locking the connection row queues concurrent rotations of one
		// connection, so each sees the token the previous one added and
		// caps it too; under READ COMMITTED they would otherwise miss it.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM connections WHERE id = $1 FOR NO KEY UPDATE`,
			t.ConnectionID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("connection", t.ConnectionID)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE agent_tokens SET expires_at = $1
			WHERE connection_id = $2 AND id <> $3 AND (expires_at IS NULL OR expires_at > $1)`,
			previousValidUntil, t.ConnectionID, t.ID)
		if err != nil {
			return err
		}
		return insertToken(ctx, tx, t)
	})
	if err != nil {
		return fmt.Errorf("rotate token of %q: %w", t.ConnectionID, err)
	}
	return nil
}

// GetToken returns the agent token with the given id.
func (s *Store) GetToken(ctx context.Context, id string) (store.Token, error) {
	row := s.pool.QueryRow(ctx, `SELECT id, connection_id, hash, created_at, expires_at
		FROM agent_tokens WHERE id = $1`, id)
	t, err := scanToken(row)
	return one(t, err, "token", "get token", id)
}

func insertToken(ctx context.Context, tx pgx.Tx, t store.Token) error {
	_, err := tx.Exec(ctx, `INSERT INTO agent_tokens (id, connection_id, hash, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, t.ID, t.ConnectionID, nonNil(t.Hash), t.CreatedAt, t.ExpiresAt)
	if err != nil {
		return fmt.Errorf("token %q: %w", t.ID, mapErr(err))
	}
	return nil
}

// nonNil keeps an empty hash from being sent as NULL, which the NOT NULL
// column would refuse with an unhelpful error.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// utcOpt returns a nullable time in UTC; pgx hands timestamptz back in
// the local zone.
func utcOpt(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// one finishes reading the single record of kind named id: no row is the
// store's not-found error, any other error is wrapped with op.
func one[T any](v T, err error, kind, op, id string) (T, error) {
	var zero T
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, notFound(kind, id)
	}
	if err != nil {
		return zero, fmt.Errorf("%s %q: %w", op, id, err)
	}
	return v, nil
}

func scanConnection(row pgx.Row) (store.Connection, error) {
	var c store.Connection
	if err := row.Scan(&c.ID, &c.Workspace, &c.Name, &c.CreatedAt,
		&c.RevokedAt, &c.FirstConnectedAt, &c.LastSeenAt); err != nil {
		return store.Connection{}, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	c.RevokedAt = utcOpt(c.RevokedAt)
	c.FirstConnectedAt = utcOpt(c.FirstConnectedAt)
	c.LastSeenAt = utcOpt(c.LastSeenAt)
	return c, nil
}

func scanToken(row pgx.Row) (store.Token, error) {
	var t store.Token
	if err := row.Scan(&t.ID, &t.ConnectionID, &t.Hash, &t.CreatedAt, &t.ExpiresAt); err != nil {
		return store.Token{}, err
	}
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt = utcOpt(t.ExpiresAt)
	return t, nil
}
