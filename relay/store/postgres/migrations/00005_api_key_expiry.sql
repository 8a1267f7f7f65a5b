-- An API key may be given an end when it is created: after expires_at the
-- relay refuses it, as it refuses a revoked one. NULL means no end.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN expires_at;
