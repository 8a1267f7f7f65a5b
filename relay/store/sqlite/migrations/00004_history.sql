-- The history of every connection: one row per status transition (tunnel,
-- auth, allowlist), as the relay published it. body is the JSON of the
-- event (relay/api.Event without its id); created_at is when the
-- transition happened. The same shape as PostgreSQL's status_events.
-- (Version 00003 belongs to another change; goose applies gaps in order.)

-- +goose Up
CREATE TABLE status_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL,
    workspace     TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

CREATE INDEX status_events_by_connection ON status_events (connection_id, id);
CREATE INDEX status_events_by_time ON status_events (created_at);

-- +goose Down
DROP TABLE status_events;
