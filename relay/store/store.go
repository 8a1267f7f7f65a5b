// Package store defines the relay's durable records — connections, their
// agent tokens, and API keys — and the Store interface the rest of the relay
// uses to keep them.
//
// Implementations live in sub-packages, one per database (sqlite, and later
// postgres); storetest holds the behaviour suite every implementation must
// pass. This package holds no SQL and no secrets: tokens and keys are kept
// as hashes produced by relay/secret.
package store

import (
	"context"
	"errors"
	"regexp"
	"time"
)

var (
	// ErrNotFound means no record has the given id.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a record with the same id already exists.
	ErrConflict = errors.New("already exists")
	// ErrNotRevoked means a connection that is still in use was to be
	// deleted: only a revoked connection may be.
	ErrNotRevoked = errors.New("not revoked")
)

// Connection is one customer network. Several agent replicas may serve it.
type Connection struct {
	ID        string
	Workspace string
	Name      string
	CreatedAt time.Time
	// RevokedAt is set once and never changes afterwards.
	RevokedAt *time.Time
	// FirstConnectedAt is when an agent first completed the tunnel
	// handshake; nil means no agent ever did.
	FirstConnectedAt *time.Time
	// LastSeenAt is the latest moment an agent was known to be connected.
	// It never moves backwards.
	LastSeenAt *time.Time
}

// Revoked reports whether the connection has been revoked.
func (c Connection) Revoked() bool { return c.RevokedAt != nil }

// Token is an agent token of a connection, stored as the hash of its secret.
type Token struct {
	ID           string
	ConnectionID string
	Hash         []byte
	CreatedAt    time.Time
	// ExpiresAt is nil for a token without expiry; rotation gives the
	// older tokens one.
	ExpiresAt *time.Time
}

// ValidAt reports whether the token has not expired at t. It does not look
// at the connection's revocation.
func (t Token) ValidAt(at time.Time) bool {
	return t.ExpiresAt == nil || at.Before(*t.ExpiresAt)
}

// APIKey is a key for the relay's HTTP API and proxy, stored as the hash of
// its secret. An admin key may do everything; any other key is limited to
// Workspace.
type APIKey struct {
	ID        string
	Name      string
	Workspace string
	Admin     bool
	Hash      []byte
	CreatedAt time.Time
	// RevokedAt is set once and never changes afterwards.
	RevokedAt *time.Time
	// ExpiresAt is nil for a key without an end.
	ExpiresAt *time.Time
	// LastUsedAt is when the key was last accepted, to within the
	// interval at which uses are recorded; nil means never.
	LastUsedAt *time.Time
}

// ActiveAt reports whether the key may be used at t: neither revoked nor
// expired.
func (k APIKey) ActiveAt(t time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || t.Before(*k.ExpiresAt))
}

// Store keeps the relay's records. Methods that look a record up return an
// error wrapping ErrNotFound when it does not exist; methods that create one
// return an error wrapping ErrConflict when the id is taken. All times come
// back in UTC and compare equal (time.Equal) to what was stored, to at
// least microsecond precision.
//
// The store enforces no policy beyond that: whether a revoked connection
// may rotate its token, or which workspace a key may touch, is the caller's
// decision.
type Store interface {
	// CreateConnection stores c and its first token t in one transaction.
	// t.ConnectionID must be c.ID or empty (then c.ID is used).
	CreateConnection(ctx context.Context, c Connection, t Token) error
	GetConnection(ctx context.Context, id string) (Connection, error)
	// ListConnections returns the connections of workspace ("" = all),
	// ordered by creation time, then id. No match is an empty slice.
	ListConnections(ctx context.Context, workspace string) ([]Connection, error)
	// RevokeConnection sets revoked_at to at unless it is already set, and
	// returns the connection as stored afterwards.
	RevokeConnection(ctx context.Context, id string, at time.Time) (Connection, error)
	// DeleteConnection deletes a revoked connection, in one transaction
	// with what belongs to it alone: its agent tokens and, in a store a
	// cluster shares, its published status, its record of refused agent
	// tokens and its open sessions. A connection not revoked is left as
	// it is (ErrNotRevoked). Its status events stay: they are the event
	// log, with a retention of their own (see PruneEvents).
	DeleteConnection(ctx context.Context, id string) error
	// RotateToken adds t, and makes every other token of t.ConnectionID
	// that would still be valid after previousValidUntil expire then.
	RotateToken(ctx context.Context, t Token, previousValidUntil time.Time) error
	GetToken(ctx context.Context, id string) (Token, error)
	// MarkConnected records that an agent completed the handshake at: it
	// sets first_connected_at if unset, and advances last_seen_at.
	MarkConnected(ctx context.Context, connectionID string, at time.Time) error
	// MarkSeen advances last_seen_at to at (never backwards).
	MarkSeen(ctx context.Context, connectionID string, at time.Time) error
	CreateAPIKey(ctx context.Context, k APIKey) error
	GetAPIKey(ctx context.Context, id string) (APIKey, error)
	// ListAPIKeys returns every key, revoked and expired ones included,
	// ordered by creation time, then id.
	ListAPIKeys(ctx context.Context) ([]APIKey, error)
	// RevokeAPIKey sets revoked_at to at unless it is already set, and
	// returns the key as stored afterwards.
	RevokeAPIKey(ctx context.Context, id string, at time.Time) (APIKey, error)
	// MarkAPIKeyUsed advances last_used_at to at (never backwards).
	MarkAPIKeyUsed(ctx context.Context, id string, at time.Time) error
	// CountAPIKeys counts every key, revoked or not.
	CountAPIKeys(ctx context.Context) (int, error)

	// AppendEvents stores the status events of a single node in the
	// order given, with increasing ids. A cluster stores its events with
	// Cluster.Publish instead, in the same table, so that each is stored
	// once. Receivers are ignored.
	AppendEvents(ctx context.Context, events []EventRecord) error
	// ConnectionHistory returns the newest limit events of a connection
	// whose At is at or after since, oldest first (by id).
	ConnectionHistory(ctx context.Context, connectionID string, since time.Time, limit int) ([]EventRecord, error)
	// PruneEvents deletes the events whose At is before before, except
	// the newest event of each type of each connection, which always
	// says since when its state holds; a deleted connection's have no
	// state to tell and all go. It returns how many it deleted.
	// Where several nodes share the store, one prunes at a time: a call
	// while another node prunes deletes nothing.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	// Close releases the database. It is safe to call more than once.
	Close() error
}

// workspacePattern is what a workspace name may look like: it appears in
// URLs, logs and API keys' scopes.
var workspacePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidWorkspace reports whether ws is a usable workspace name: lower-case
// letters, digits, '-' and '_', 1 to 63 characters, starting with a letter
// or digit.
func ValidWorkspace(ws string) bool { return workspacePattern.MatchString(ws) }
