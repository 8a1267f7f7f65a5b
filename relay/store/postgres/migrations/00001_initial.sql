-- Times are timestamptz (microsecond precision, compared as instants).
-- Ids use the "C" collation so ORDER BY id is byte order, as in the SQLite
-- store, whatever the database's default collation.

-- +goose Up
CREATE TABLE connections (
    id                 text COLLATE "C" PRIMARY KEY,
    workspace          text NOT NULL,
    name               text NOT NULL,
    created_at         timestamptz NOT NULL,
    revoked_at         timestamptz,
    first_connected_at timestamptz,
    last_seen_at       timestamptz
);

CREATE INDEX connections_by_created ON connections (created_at, id);
CREATE INDEX connections_by_workspace ON connections (workspace, created_at, id);

CREATE TABLE agent_tokens (
    id            text COLLATE "C" PRIMARY KEY,
    connection_id text COLLATE "C" NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    hash          bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz
);

CREATE INDEX agent_tokens_by_connection ON agent_tokens (connection_id);

CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL,
    workspace  text NOT NULL,
    admin      boolean NOT NULL,
    hash       bytea NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- +goose Down
DROP TABLE api_keys;
DROP TABLE agent_tokens;
DROP TABLE connections;
