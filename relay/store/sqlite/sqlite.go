// Package sqlite keeps the relay's records in one SQLite file, for a single
// relay node. It is the default store; clusters use PostgreSQL instead.
//
// The schema is migrated on Open from SQL files embedded in the binary. The
// database runs in WAL mode with two handles: one connection that does
// every write (SQLite allows one writer at a time, so queueing writes in
// Go beats retrying on SQLITE_BUSY), and a pool of read-only connections
// that WAL lets run alongside it.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/pressly/goose/v3"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeoutMS bounds how long a statement waits for a lock held by
// another process (a backup tool, the sqlite3 shell) before failing.
const busyTimeoutMS = 5000

// Store is a store.Store on SQLite. It is safe for concurrent use.
type Store struct {
	w *sql.DB // the only writer: one connection, BEGIN IMMEDIATE
	r *sql.DB // read-only pool

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	log *slog.Logger
}

// WithLogger sets where migration progress is logged. The default discards
// it.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// Open opens (creating if needed, with mode 0600) the database at path and
// brings its schema up to date. The parent directory must exist.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if path == "" {
		return nil, errors.New("open sqlite store: empty path")
	}
	// The driver reads everything after the first '?' as parameters.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite store %s: path must not contain '?'", path)
	}
	if err := createFile(path); err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}

	base := path + "?_txlock=immediate" +
		fmt.Sprintf("&_pragma=busy_timeout(%d)", busyTimeoutMS) +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)"

	w, err := sql.Open("sqlite", base)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)

	if err := migrate.Up(ctx, goose.DialectSQLite3, w, migrations, o.log); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", base+"&_query_only=1")
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	n := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)

	s := &Store{w: w, r: r}
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return s, nil
}

// createFile makes sure the database file exists with owner-only access
// before SQLite opens it; SQLite gives its -wal and -shm files the same
// mode. An existing file is left as it is.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// Ping reports whether both handles reach the database.
func (s *Store) Ping(ctx context.Context) error {
	for _, db := range []*sql.DB{s.w, s.r} {
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			return fmt.Errorf("ping sqlite store: %w", err)
		}
	}
	return nil
}

// Close closes the database. Calls after the first return the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// inTx runs fn in a write transaction, committing if fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// mapErr turns constraint violations into the store's sentinels.
func mapErr(err error) error {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

func notFound(kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, store.ErrNotFound)
}
