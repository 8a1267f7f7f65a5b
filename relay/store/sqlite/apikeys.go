package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/postern/postern/relay/store"
)

// CreateAPIKey stores k.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	var ts timeArgs
	created, revoked := ts.at(k.CreatedAt), ts.opt(k.RevokedAt)
	if ts.err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, ts.err)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (id, name, workspace, admin, hash, created_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Name, k.Workspace, k.Admin, nonNil(k.Hash), created, revoked)
	if err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, mapErr(err))
	}
	return nil
}

// GetAPIKey returns the API key with the given id.
func (s *Store) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	row := s.r.QueryRowContext(ctx, `SELECT id, name, workspace, admin, hash, created_at, revoked_at
		FROM api_keys WHERE id = ?`, id)
	k, err := scanAPIKey(row)
	return one(k, err, "api key", "get api key", id)
}

func scanAPIKey(row scanner) (store.APIKey, error) {
	var (
		k       store.APIKey
		created string
		revoked sql.NullString
	)
	err := row.Scan(&k.ID, &k.Name, &k.Workspace, &k.Admin, &k.Hash, &created, &revoked)
	if err == nil {
		k.CreatedAt, err = parseTime(created)
	}
	if err == nil {
		k.RevokedAt, err = parseOptTime(revoked)
	}
	return k, err
}

// CountAPIKeys counts every stored key, revoked ones included.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count api keys: %w", err)
	}
	return n, nil
}
