package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store/postgres"
)

func TestOpenStorePostgres(t *testing.T) {
	raw := os.Getenv("POSTERN_TEST_POSTGRES_URL")
	if raw == "" {
		t.Skip("PostgreSQL not configured: set POSTERN_TEST_POSTGRES_URL")
	}
	u, err := url.Parse(raw)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Skipf("PostgreSQL not available at %s: set POSTERN_TEST_POSTGRES_URL (%v)", u.Redacted(), err)
	}
	defer admin.Close(context.Background())
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "postern_test_" + hex.EncodeToString(b[:])
	_, err = admin.Exec(ctx, `CREATE SCHEMA `+schema)
	require.NoError(t, err)
	defer func() {
		_, err := admin.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		assert.NoError(t, err)
	}()

	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	migrated := false
	for name, scheme := range map[string]string{"postgres": "postgres", "postgresql": "postgresql"} {
		t.Run(name, func(t *testing.T) {
			v := *u
			v.Scheme = scheme
			var logs strings.Builder
			st, err := openStore(t.Context(), serveConfig{Data: t.TempDir(), Database: v.String()}, slog.New(slog.NewTextHandler(&logs, nil)))
			require.NoError(t, err)
			defer func() { require.NoError(t, st.Close()) }()
			assert.IsType(t, &postgres.Store{}, st)
			n, err := st.CountAPIKeys(t.Context())
			require.NoError(t, err)
			assert.Zero(t, n)
			if !migrated {
				assert.Contains(t, logs.String(), "store migration applied", "a fresh schema logs its migrations")
				migrated = true
			}
			assert.NotContains(t, logs.String(), "hunter2")
		})
	}
}

func TestOpenStorePostgresUnreachable(t *testing.T) {
	st, err := openStore(t.Context(), serveConfig{
		Data:     t.TempDir(),
		Database: "postgres://postern:hunter2@127.0.0.1:1/relay?sslmode=disable&connect_timeout=5",
	}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	assert.Nil(t, st, "no typed nil store")
	assert.NotContains(t, err.Error(), "hunter2")
}
