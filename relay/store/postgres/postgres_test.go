package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// urlEnv names the variable holding the test server's URL; the tests that
// need a server skip without it.
const urlEnv = "POSTERN_TEST_POSTGRES_URL"

// serverURL returns the test server's URL, or skips the test when none is
// configured or it does not answer.
func serverURL(t *testing.T) string {
	t.Helper()
	raw := os.Getenv(urlEnv)
	if raw == "" {
		t.Skipf("PostgreSQL not configured: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", urlEnv)
	}
	u, err := url.Parse(raw)
	require.NoError(t, err, "%s must be a postgres:// URL", urlEnv)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Skipf("PostgreSQL not available at %s: set %s to a reachable server (%v)", u.Redacted(), urlEnv, err)
	}
	require.NoError(t, conn.Close(ctx))
	return raw
}

// freshSchema creates an empty, uniquely named schema, dropped when the
// test ends, and returns the server URL with search_path set to it.
func freshSchema(t *testing.T) (schemaURL, schema string) {
	t.Helper()
	raw := serverURL(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema = "postern_test_" + hex.EncodeToString(b[:])

	exec(t, raw, `CREATE SCHEMA `+schema)
	t.Cleanup(func() { exec(t, raw, `DROP SCHEMA `+schema+` CASCADE`) })

	u, err := url.Parse(raw)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), schema
}

// onConn runs fn on a connection of its own, within 10 s. It does not use
// t.Context, which is already done when cleanups run.
func onConn(t *testing.T, raw string, fn func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	require.NoError(t, err)
	defer conn.Close(ctx)
	fn(ctx, conn)
}

// exec runs one statement on its own connection.
func exec(t *testing.T, raw, sql string, args ...any) {
	t.Helper()
	onConn(t, raw, func(ctx context.Context, conn *pgx.Conn) {
		_, err := conn.Exec(ctx, sql, args...)
		require.NoError(t, err)
	})
}

func queryInt(t *testing.T, raw, sql string, args ...any) int {
	t.Helper()
	var n int
	onConn(t, raw, func(ctx context.Context, conn *pgx.Conn) {
		require.NoError(t, conn.QueryRow(ctx, sql, args...).Scan(&n))
	})
	return n
}

func openFresh(t *testing.T, opts ...Option) *Store {
	t.Helper()
	u, _ := freshSchema(t)
	s, err := Open(t.Context(), u, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestStoreBehaviour(t *testing.T) {
	serverURL(t) // skip once here rather than in every case
	storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
}

func TestOpenPlacesTablesInSearchPath(t *testing.T) {
	u, schema := freshSchema(t)
	s, err := Open(t.Context(), u)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()

	n := queryInt(t, u, `SELECT count(*) FROM pg_tables WHERE schemaname = $1
		AND tablename IN ('connections', 'agent_tokens', 'api_keys', 'goose_db_version')`, schema)
	assert.Equal(t, 4, n)
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	u, schema := freshSchema(t)
	const nodes = 4
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		stores []*Store
		errs   []error
	)
	for range nodes {
		wg.Go(func() {
			s, err := Open(t.Context(), u)
			mu.Lock()
			defer mu.Unlock()
			if s != nil {
				stores = append(stores, s)
			}
			errs = append(errs, err)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range stores {
			assert.NoError(t, s.Close())
		}
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, stores, nodes)

	applied := queryInt(t, u, `SELECT count(*) FROM `+schema+`.goose_db_version WHERE version_id = 1`)
	assert.Equal(t, 1, applied, "the first migration is recorded once")
	for _, s := range stores {
		n, err := s.CountAPIKeys(t.Context())
		require.NoError(t, err)
		assert.Zero(t, n)
	}
}

func TestReopenKeepsData(t *testing.T) {
	u, _ := freshSchema(t)
	storetest.Reopen(t, func() (store.Store, error) { return Open(t.Context(), u) },
		time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), "microseconds")
}

func TestWithMaxConns(t *testing.T) {
	u, _ := freshSchema(t)
	withParam := func(v string) string {
		p, err := url.Parse(u)
		require.NoError(t, err)
		q := p.Query()
		q.Set("pool_max_conns", v)
		p.RawQuery = q.Encode()
		return p.String()
	}
	for name, tc := range map[string]struct {
		url  string
		opts []Option
		want int32
	}{
		"neither":             {u, nil, DefaultMaxConns},
		"option":              {u, []Option{WithMaxConns(3)}, 3},
		"url parameter":       {withParam("5"), nil, 5},
		"option beats url":    {withParam("5"), []Option{WithMaxConns(2)}, 2},
		"non-positive option": {withParam("5"), []Option{WithMaxConns(0)}, 5},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.url, tc.opts...)
			require.NoError(t, err)
			defer func() { require.NoError(t, s.Close()) }()
			assert.Equal(t, tc.want, s.pool.Config().MaxConns)
		})
	}
}

func TestCanceledContext(t *testing.T) {
	s := openFresh(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetConnection(ctx, "c1")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.CreateAPIKey(ctx, store.APIKey{ID: "k1", CreatedAt: time.Now()}), context.Canceled)
	n, err := s.CountAPIKeys(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n)
}

// TestOpenErrors needs no server: every case fails before or at connecting.
func TestOpenErrors(t *testing.T) {
	for name, u := range map[string]string{
		"empty":     "",
		"malformed": "postgres://%zz",
		"bad param": "postgres://postgres@127.0.0.1:1/test?pool_max_conns=lots",
		"no server": "postgres://postgres:secret@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.Context(), u)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.NotContains(t, err.Error(), "secret", "the password stays out of errors")
		})
	}
}

func TestMapErr(t *testing.T) {
	plain := errors.New("boom")
	for name, tc := range map[string]struct {
		err      error
		conflict bool
		notFound bool
	}{
		"unique violation":      {&pgconn.PgError{Code: codeUniqueViolation}, true, false},
		"foreign key violation": {&pgconn.PgError{Code: codeForeignKeyViolation}, false, true},
		"other server error":    {&pgconn.PgError{Code: "40001"}, false, false},
		"not a server error":    {plain, false, false},
	} {
		t.Run(name, func(t *testing.T) {
			got := mapErr(tc.err)
			assert.Equal(t, tc.conflict, errors.Is(got, store.ErrConflict))
			assert.Equal(t, tc.notFound, errors.Is(got, store.ErrNotFound))
			assert.ErrorIs(t, got, tc.err)
		})
	}
}

// TestPruneTakesTurns: while another node holds the pruning lock, a prune
// deletes nothing; once it is free, the same prune does its work.
func TestPruneTakesTurns(t *testing.T) {
	u, _ := freshSchema(t)
	s, err := Open(t.Context(), u)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	old := time.Now().Add(-48 * time.Hour)
	require.NoError(t, s.CreateConnection(t.Context(), store.Connection{ID: "c1", Workspace: "w", Name: "n", CreatedAt: old},
		store.Token{ID: "t1", Hash: []byte("h"), CreatedAt: old}), "only an existing connection keeps its newest event")
	require.NoError(t, s.AppendEvents(t.Context(), []store.EventRecord{
		{ConnectionID: "c1", Workspace: "w", At: old, Body: []byte(`{"type":"tunnel"}`)},
		{ConnectionID: "c1", Workspace: "w", At: old.Add(time.Second), Body: []byte(`{"type":"tunnel"}`)},
	}))
	onConn(t, u, func(ctx context.Context, conn *pgx.Conn) {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		var held bool
		require.NoError(t, tx.QueryRow(ctx, pruneLock).Scan(&held))
		require.True(t, held)
		n, err := s.PruneEvents(t.Context(), time.Now())
		require.NoError(t, err)
		assert.Zero(t, n, "another node is pruning")
	})
	n, err := s.PruneEvents(t.Context(), time.Now())
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "the lock is free again; the newest event stays")
}
