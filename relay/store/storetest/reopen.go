package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

// Reopen checks that a store keeps what it wrote across a close and an
// open of the same database, and that closing is idempotent. open opens
// that database each time it is called. created is stored and must come
// back equal: its digits are the store's precision, which precision names
// ("microseconds") in the failure message.
func Reopen(t *testing.T, open func() (store.Store, error), created time.Time, precision string) {
	t.Helper()
	s, err := open()
	require.NoError(t, err)
	require.NoError(t, s.CreateConnection(t.Context(),
		store.Connection{ID: "c1", Workspace: "w", Name: "n", CreatedAt: created},
		store.Token{ID: "t1", Hash: []byte("h"), CreatedAt: created}))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "close is idempotent")
	require.Error(t, s.Ping(t.Context()), "a closed store does not answer")

	// Migrations already applied must not run again or fail.
	s, err = open()
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	c, err := s.GetConnection(t.Context(), "c1")
	require.NoError(t, err)
	assert.True(t, created.Equal(c.CreatedAt), "%s survive: %s", precision, c.CreatedAt)
}
