-- Times are TEXT in UTC, fixed-width RFC 3339 with nanoseconds
-- (2006-01-02T15:04:05.000000000Z), so string order is time order.

-- +goose Up
CREATE TABLE connections (
    id                 TEXT PRIMARY KEY,
    workspace          TEXT NOT NULL,
    name               TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    revoked_at         TEXT,
    first_connected_at TEXT,
    last_seen_at       TEXT
) STRICT;

CREATE INDEX connections_by_created ON connections (created_at, id);
CREATE INDEX connections_by_workspace ON connections (workspace, created_at, id);

CREATE TABLE agent_tokens (
    id            TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    hash          BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT
) STRICT;

CREATE INDEX agent_tokens_by_connection ON agent_tokens (connection_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    admin      INTEGER NOT NULL CHECK (admin IN (0, 1)),
    hash       BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) STRICT;

-- +goose Down
DROP TABLE api_keys;
DROP TABLE agent_tokens;
DROP TABLE connections;
