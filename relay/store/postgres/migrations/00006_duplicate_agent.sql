-- A cluster publishes a DUPLICATE_AGENT warning once, as an event of type
-- warning, when more than one agent process uses one agent id, and once
-- when it ends: duplicate is whether the last publication carried it.

-- +goose Up
ALTER TABLE connection_state ADD COLUMN duplicate boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE connection_state DROP COLUMN duplicate;
