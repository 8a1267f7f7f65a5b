package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

// CreateAPIKey stores k.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, name, workspace, admin, hash, created_at, revoked_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		k.ID, k.Name, k.Workspace, k.Admin, nonNil(k.Hash), k.CreatedAt, k.RevokedAt)
	if err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, mapErr(err))
	}
	return nil
}

// GetAPIKey returns the API key with the given id.
func (s *Store) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	row := s.pool.QueryRow(ctx, `SELECT id, name, workspace, admin, hash, created_at, revoked_at
		FROM api_keys WHERE id = $1`, id)
	k, err := scanAPIKey(row)
	return one(k, err, "api key", "get api key", id)
}

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var k store.APIKey
	if err := row.Scan(&k.ID, &k.Name, &k.Workspace, &k.Admin, &k.Hash, &k.CreatedAt, &k.RevokedAt); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.RevokedAt = utcOpt(k.RevokedAt)
	return k, nil
}

// CountAPIKeys counts every stored key, revoked ones included.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count api keys: %w", err)
	}
	return n, nil
}
