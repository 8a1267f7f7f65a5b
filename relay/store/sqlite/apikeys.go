package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/postern/postern/relay/store"
)

const apiKeyColumns = `id, name, workspace, admin, hash, created_at, revoked_at, expires_at, last_used_at`

// CreateAPIKey stores k.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	var ts timeArgs
	created, revoked, expires, used := ts.at(k.CreatedAt), ts.opt(k.RevokedAt), ts.opt(k.ExpiresAt), ts.opt(k.LastUsedAt)
	if ts.err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, ts.err)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Name, k.Workspace, k.Admin, nonNil(k.Hash), created, revoked, expires, used)
	if err != nil {
		return fmt.Errorf("create api key %q: %w", k.ID, mapErr(err))
	}
	return nil
}

// GetAPIKey returns the API key with the given id.
func (s *Store) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	row := s.r.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, id)
	k, err := scanAPIKey(row)
	return one(k, err, "api key", "get api key", id)
}

// ListAPIKeys returns every key, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys, err := collect(rows, scanAPIKey)
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
	return s.touch(ctx, "mark api key used", "api key", id, at, `UPDATE api_keys
		SET last_used_at = MAX(COALESCE(last_used_at, ?1), ?1)
		WHERE id = ?2`)
}

func scanAPIKey(row scanner) (store.APIKey, error) {
	var (
		k                store.APIKey
		created          string
		revoked, expires sql.NullString
		used             sql.NullString
	)
	err := row.Scan(&k.ID, &k.Name, &k.Workspace, &k.Admin, &k.Hash, &created, &revoked, &expires, &used)
	if err == nil {
		k.CreatedAt, err = parseTime(created)
	}
	if err == nil {
		k.RevokedAt, err = parseOptTime(revoked)
	}
	if err == nil {
		k.ExpiresAt, err = parseOptTime(expires)
	}
	if err == nil {
		k.LastUsedAt, err = parseOptTime(used)
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
