-- An API key may be given an end when it is created: after expires_at the
-- relay refuses it, as it refuses a revoked one. NULL means no end.
-- last_used_at is when the key was last accepted, written at most once a
-- minute per key and node; NULL means never.
-- (Version 00003 belongs to another change; goose applies gaps in order.)

-- +goose Up
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN last_used_at;
ALTER TABLE api_keys DROP COLUMN expires_at;
