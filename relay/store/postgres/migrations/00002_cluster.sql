-- The shared state of a cluster of relay nodes (see relay/store/cluster.go).
-- Leases are timestamps: a row whose lease lapsed is ignored by readers and
-- dropped by whichever node sweeps next.

-- +goose Up
CREATE TABLE relay_nodes (
    id          text COLLATE "C" PRIMARY KEY,
    peer_url    text NOT NULL,
    draining    boolean NOT NULL DEFAULT false,
    started_at  timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    lease_until timestamptz NOT NULL
);

-- One row per agent session. seq orders the writes about a session; a
-- closed row is a tombstone that a late write cannot reopen.
CREATE TABLE agent_sessions (
    id            text COLLATE "C" PRIMARY KEY,
    connection_id text COLLATE "C" NOT NULL,
    node_id       text COLLATE "C" NOT NULL,
    token_id      text NOT NULL,
    seq           bigint NOT NULL,
    closed        boolean NOT NULL DEFAULT false,
    draining      boolean NOT NULL DEFAULT false,
    view          jsonb NOT NULL,
    lease_until   timestamptz NOT NULL
);

CREATE INDEX agent_sessions_open ON agent_sessions (connection_id) WHERE NOT closed;
CREATE INDEX agent_sessions_by_node ON agent_sessions (node_id) WHERE NOT closed;

CREATE TABLE connection_state (
    connection_id text COLLATE "C" PRIMARY KEY,
    tunnel        text NOT NULL,
    auth          text NOT NULL,
    allowlist     text NOT NULL
);

CREATE TABLE auth_failures (
    connection_id text COLLATE "C" PRIMARY KEY,
    at            timestamptz NOT NULL,
    count         bigint NOT NULL,
    message       text NOT NULL
);

CREATE TABLE status_events (
    id            bigserial PRIMARY KEY,
    connection_id text NOT NULL,
    workspace     text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    event_id      bigint NOT NULL REFERENCES status_events (id) ON DELETE CASCADE,
    receiver      text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL,
    done          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (event_id, receiver)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE NOT done;

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE status_events;
DROP TABLE auth_failures;
DROP TABLE connection_state;
DROP TABLE agent_sessions;
DROP TABLE relay_nodes;
