package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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
	var ts timeArgs
	created, revoked := ts.at(c.CreatedAt), ts.opt(c.RevokedAt)
	first, seen := ts.opt(c.FirstConnectedAt), ts.opt(c.LastSeenAt)
	if ts.err != nil {
		return fmt.Errorf("create connection %q: %w", c.ID, ts.err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO connections (`+connectionColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.Workspace, c.Name, created, revoked, first, seen)
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
	row := s.r.QueryRowContext(ctx, `SELECT `+connectionColumns+` FROM connections WHERE id = ?`, id)
	c, err := scanConnection(row)
	return one(c, err, "connection", "get connection", id)
}

// ListConnections returns the connections of workspace, or all of them
// when workspace is empty, oldest first.
func (s *Store) ListConnections(ctx context.Context, workspace string) ([]store.Connection, error) {
	q := `SELECT ` + connectionColumns + ` FROM connections`
	var args []any
	if workspace != "" {
		q += ` WHERE workspace = ?`
		args = append(args, workspace)
	}
	q += ` ORDER BY created_at, id`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	out, err := collect(rows, scanConnection)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}

// RevokeConnection sets revoked_at once; later calls keep the first time.
func (s *Store) RevokeConnection(ctx context.Context, id string, at time.Time) (store.Connection, error) {
	return revoke(ctx, s, "connections", connectionColumns, "connection", scanConnection, id, at)
}

// DeleteConnection deletes a revoked connection; its agent tokens go with
// it (ON DELETE CASCADE). Its status events stay until PruneEvents ages
// them out: they are the event log, kept for a retention of their own.
// A single node keeps no other row of a connection.
func (s *Store) DeleteConnection(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var revoked sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT revoked_at FROM connections WHERE id = ?`, id).Scan(&revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return store.ErrNotFound
		case err != nil:
			return err
		case !revoked.Valid:
			return store.ErrNotRevoked
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM connections WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete connection %q: %w", id, err)
	}
	return nil
}

// revoke sets revoked_at of record id of table (a record of kind) to at
// unless it is set, and reads the record back with scan.
func revoke[T any](ctx context.Context, s *Store, table, columns, kind string, scan func(scanner) (T, error), id string, at time.Time) (T, error) {
	var zero T
	ts, err := formatTime(at)
	if err != nil {
		return zero, fmt.Errorf("revoke %s %q: %w", kind, id, err)
	}
	row := s.w.QueryRowContext(ctx, `UPDATE `+table+`
		SET revoked_at = COALESCE(revoked_at, ?)
		WHERE id = ?
		RETURNING `+columns, ts, id)
	v, err := scan(row)
	return one(v, err, kind, "revoke "+kind, id)
}

// MarkConnected sets first_connected_at if unset and advances last_seen_at.
func (s *Store) MarkConnected(ctx context.Context, connectionID string, at time.Time) error {
	return s.touch(ctx, "mark connected", "connection", connectionID, at, `UPDATE connections
		SET first_connected_at = COALESCE(first_connected_at, ?1),
		    last_seen_at = MAX(COALESCE(last_seen_at, ?1), ?1)
		WHERE id = ?2`)
}

// MarkSeen advances last_seen_at; an older time than the stored one is
// ignored, so reports arriving out of order cannot move it back.
func (s *Store) MarkSeen(ctx context.Context, connectionID string, at time.Time) error {
	return s.touch(ctx, "mark seen", "connection", connectionID, at, `UPDATE connections
		SET last_seen_at = MAX(COALESCE(last_seen_at, ?1), ?1)
		WHERE id = ?2`)
}

func (s *Store) touch(ctx context.Context, op, kind, id string, at time.Time, q string) error {
	ts, err := formatTime(at)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, id, err)
	}
	res, err := s.w.ExecContext(ctx, q, ts, id)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, id, err)
	}
	if n == 0 {
		return notFound(kind, id)
	}
	return nil
}

// RotateToken adds t and caps the expiry of the connection's other tokens
// at previousValidUntil.
func (s *Store) RotateToken(ctx context.Context, t store.Token, previousValidUntil time.Time) error {
	until, err := formatTime(previousValidUntil)
	if err != nil {
		return fmt.Errorf("rotate token of %q: %w", t.ConnectionID, err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM connections WHERE id = ?`, t.ConnectionID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("connection", t.ConnectionID)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE agent_tokens SET expires_at = ?
			WHERE connection_id = ? AND id <> ? AND (expires_at IS NULL OR expires_at > ?)`,
			until, t.ConnectionID, t.ID, until)
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
	row := s.r.QueryRowContext(ctx, `SELECT id, connection_id, hash, created_at, expires_at
		FROM agent_tokens WHERE id = ?`, id)
	t, err := scanToken(row)
	return one(t, err, "token", "get token", id)
}

func insertToken(ctx context.Context, tx *sql.Tx, t store.Token) error {
	var ts timeArgs
	created, expires := ts.at(t.CreatedAt), ts.opt(t.ExpiresAt)
	if ts.err != nil {
		return fmt.Errorf("token %q: %w", t.ID, ts.err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO agent_tokens (id, connection_id, hash, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, t.ID, t.ConnectionID, nonNil(t.Hash), created, expires)
	if err != nil {
		return fmt.Errorf("token %q: %w", t.ID, mapErr(err))
	}
	return nil
}

// nonNil keeps an empty hash from being stored as NULL, which the NOT NULL
// column would refuse with an unhelpful error.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

type scanner interface{ Scan(dest ...any) error }

// collect reads every row with scan and closes rows; no row is an empty
// slice.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// one finishes reading the single record of kind named id: no row is the
// store's not-found error, any other error is wrapped with op.
func one[T any](v T, err error, kind, op, id string) (T, error) {
	var zero T
	if errors.Is(err, sql.ErrNoRows) {
		return zero, notFound(kind, id)
	}
	if err != nil {
		return zero, fmt.Errorf("%s %q: %w", op, id, err)
	}
	return v, nil
}

func scanConnection(row scanner) (store.Connection, error) {
	var (
		c                    store.Connection
		created              string
		revoked, first, seen sql.NullString
	)
	if err := row.Scan(&c.ID, &c.Workspace, &c.Name, &created, &revoked, &first, &seen); err != nil {
		return store.Connection{}, err
	}
	var err error
	if c.CreatedAt, err = parseTime(created); err != nil {
		return store.Connection{}, err
	}
	if c.RevokedAt, err = parseOptTime(revoked); err != nil {
		return store.Connection{}, err
	}
	if c.FirstConnectedAt, err = parseOptTime(first); err != nil {
		return store.Connection{}, err
	}
	if c.LastSeenAt, err = parseOptTime(seen); err != nil {
		return store.Connection{}, err
	}
	return c, nil
}

func scanToken(row scanner) (store.Token, error) {
	var (
		t       store.Token
		created string
		expires sql.NullString
	)
	err := row.Scan(&t.ID, &t.ConnectionID, &t.Hash, &created, &expires)
	if err == nil {
		t.CreatedAt, err = parseTime(created)
	}
	if err == nil {
		t.ExpiresAt, err = parseOptTime(expires)
	}
	return t, err
}
