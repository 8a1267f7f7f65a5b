-- An API key may be given an end when it is created: after expires_at the
-- relay refuses it, as it refuses a revoked one. NULL means no end.
-- (Version 00003 belongs to another change; goose applies gaps in order.)

-- +goose Up
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN expires_at;
