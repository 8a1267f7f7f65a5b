package sqlite

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := Open(t.Context(), path)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestOpenPragmas(t *testing.T) {
	s := openTemp(t)
	for name, tc := range map[string]struct {
		db    *sql.DB
		query string
		want  string
	}{
		"writer wal":          {s.w, "PRAGMA journal_mode", "wal"},
		"reader wal":          {s.r, "PRAGMA journal_mode", "wal"},
		"writer foreign keys": {s.w, "PRAGMA foreign_keys", "1"},
		"reader foreign keys": {s.r, "PRAGMA foreign_keys", "1"},
		"writer busy timeout": {s.w, "PRAGMA busy_timeout", "5000"},
		"reader query only":   {s.r, "PRAGMA query_only", "1"},
		"writer writable":     {s.w, "PRAGMA query_only", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			var got string
			require.NoError(t, tc.db.QueryRowContext(t.Context(), tc.query).Scan(&got))
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.db")
	storetest.Reopen(t, func() (store.Store, error) { return Open(t.Context(), path) },
		time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), "nanoseconds")
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"empty":          "",
		"missing parent": filepath.Join(dir, "no", "such", "relay.db"),
		"question mark":  filepath.Join(dir, "relay.db?mode=ro"),
		"directory":      dir,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.Context(), path)
			require.Error(t, err)
			assert.Nil(t, s)
		})
	}
}

func TestReaderCannotWrite(t *testing.T) {
	s := openTemp(t)
	_, err := s.r.ExecContext(t.Context(), `DELETE FROM connections`)
	require.Error(t, err)
}

func TestTimeOutOfRange(t *testing.T) {
	s := openTemp(t)
	err := s.CreateConnection(t.Context(),
		store.Connection{ID: "c1", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		store.Token{ID: "t1", CreatedAt: time.Now()})
	require.Error(t, err)
	_, err = s.GetConnection(t.Context(), "c1")
	require.ErrorIs(t, err, store.ErrNotFound)
}
