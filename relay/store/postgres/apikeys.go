package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/relay/store"
)

const apiKeyColumns = `id, name, workspace, admin, hash, created_at, revoked_at, expires_at, last_used_at`

// CreateAPIKey stores k.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, k.Name, k.Workspace, k.Admin, nonNil(k.Hash), k.CreatedAt, k.RevokedAt, k.ExpiresAt, k.LastUsedAt)
	if err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, mapErr(err))
	}
	return nil
}

// GetAPIKey returns the API key with the given id.
func (s *Store) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = $1`, id)
	k, err := scanAPIKey(row)
	return one(k, err, "api key", "get api key", id)
}

// ListAPIKeys returns every key, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.APIKey, error) { return scanAPIKey(r) })
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey sets revoked_at once; later calls keep the first time.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, at time.Time) (store.APIKey, error) {
	return revoke(ctx, s, "api_keys", apiKeyColumns, "api key", scanAPIKey, id, at)
}

// MarkAPIKeyUsed advances last_used_at; an older time is ignored.
func (s *Store) MarkAPIKeyUsed(ctx context.Context, id string, at time.Time) error {
	// GREATEST skips NULLs, so an unset last_used_at simply becomes $1.
	return s.touch(ctx, "mark api key used", "api key", id, at, `UPDATE api_keys
		SET last_used_at = GREATEST(last_used_at, $1)
		WHERE id = $2`)
}

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var k store.APIKey
	if err := row.Scan(&k.ID, &k.Name, &k.Workspace, &k.Admin, &k.Hash, &k.CreatedAt, &k.RevokedAt, &k.ExpiresAt, &k.LastUsedAt); err != nil {
		return store.APIKey{}, err
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.RevokedAt = utcOpt(k.RevokedAt)
	k.ExpiresAt = utcOpt(k.ExpiresAt)
	k.LastUsedAt = utcOpt(k.LastUsedAt)
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
