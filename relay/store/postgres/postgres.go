// Package postgres keeps the relay's records in PostgreSQL, so that several
// relay nodes of a cluster share one set of connections, tokens and keys.
// Single-node relays use the sqlite store instead; both pass the same
// behaviour suite (storetest).
//
// The schema is migrated on Open from SQL files embedded in the binary,
// under a session advisory lock so that nodes starting together apply each
// migration once. Queries go through a bounded pgx connection pool; the
// package owns that pool and nothing else: presence leases and
// LISTEN/NOTIFY belong to the cluster code that uses this store.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLockID is the advisory lock key held while migrating. It is
// Postern's own rather than goose's default, so another goose-managed
// application sharing the database neither waits for nor excludes us.
// (The bytes spell "postern\x01".)
const migrationLockID int64 = 0x706f737465726e01

// Lock polling: a node that finds the lock taken retries every second for
// up to five minutes, which outlasts any migration this schema needs.
const (
	lockRetrySeconds   = 1
	lockRetries        = 300
	unlockRetrySeconds = 1
	unlockRetries      = 60
)

// PostgreSQL SQLSTATE codes the store maps to its sentinels.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

// Store is a store.Store on PostgreSQL. It is safe for concurrent use, also
// by several processes sharing one database.
type Store struct {
	pool *pgxpool.Pool

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	log      *slog.Logger
	maxConns int32
}

// WithLogger sets where migration progress is logged. The default discards
// it.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithMaxConns bounds the connection pool. Without it the URL's
// pool_max_conns applies, or else DefaultMaxConns. Values below 1 are
// ignored.
func WithMaxConns(n int32) Option {
	return func(o *options) { o.maxConns = n }
}

// DefaultMaxConns is the pool size when neither the URL nor WithMaxConns
// names one. pgx's own default (4 on a small machine) is too few for a
// cluster node: its LISTEN connection holds one for good, and presence,
// webhook claims and the proxy's lookups share the rest under load. Three
// nodes stay far below PostgreSQL's default max_connections of 100.
const DefaultMaxConns = 16

// Open connects to the database named by url (a postgres:// URL or a
// key=value DSN as libpq accepts, plus pgxpool's pool_* parameters),
// checks that it answers, and brings the schema up to date. Tables live in
// the connection's current schema, so a search_path runtime parameter in
// the URL places them elsewhere than "public".
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if url == "" {
		return nil, errors.New("open postgres store: empty url")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	switch {
	case o.maxConns > 0:
		cfg.MaxConns = o.maxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	// Creating the pool starts its health-check goroutine but opens no
	// connection, so the Ping below is the first contact.
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if err := migrateSchema(ctx, pool, o.log); err != nil {
		s.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return s, nil
}

func migrateSchema(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrationLockID),
		lock.WithLockTimeout(lockRetrySeconds, lockRetries),
		lock.WithUnlockTimeout(unlockRetrySeconds, unlockRetries),
	)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	// goose speaks database/sql; this handle borrows connections from the
	// pool and keeps none of its own once closed.
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return migrate.Up(ctx, goose.DialectPostgres, db, migrations, log, goose.WithSessionLocker(locker))
}

// Ping reports whether the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping postgres store: %w", err)
	}
	return nil
}

// Close closes the pool: it waits for queries in flight to finish and for
// every connection to close, and stops the pool's health-check goroutine
// (which exits on its own moments later; pgxpool does not wait for it).
// Later calls do nothing. It always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// inTx runs fn in a transaction, committing if fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		// A rollback that fails (say, ctx is done) makes pgx close the
		// connection, which ends the transaction on the server too.
		_ = tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

// mapErr turns constraint violations into the store's sentinels.
func mapErr(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case codeUniqueViolation:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case codeForeignKeyViolation:
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

func notFound(kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, store.ErrNotFound)
}
