-- status_events (00002_cluster.sql) is also every connection's history:
-- it is read per connection and pruned by age, and the status snapshot
-- reads a connection's recent tunnel transitions to tell flapping, which
-- connection_state now remembers.

-- +goose Up
CREATE INDEX status_events_by_connection ON status_events (connection_id, id);
CREATE INDEX status_events_by_time ON status_events (created_at);
ALTER TABLE connection_state ADD COLUMN flapping boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE connection_state DROP COLUMN flapping;
DROP INDEX status_events_by_time;
DROP INDEX status_events_by_connection;
