package status

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/store"
)

// TestForgetDropsADeletedConnection: once a connection is deleted, the
// single node's book keeps nothing of it, and a late recomputation
// publishes nothing.
func TestForgetDropsADeletedConnection(t *testing.T) {
	ctx := t.Context()
	bus := events.NewBus(16, 1)
	book := NewMemoryBook(func(string) []View { return nil }, bus, nil)
	k := New(Config{NodeID: "n1", HeartbeatInterval: time.Second, AuthFailureWindow: time.Minute}, nil, book,
		slog.New(slog.DiscardHandler))
	c := store.Connection{ID: "c1", Workspace: "w", CreatedAt: time.Now()}
	k.Watch(ctx, c)
	require.NoError(t, book.NoteFailure(ctx, c.ID, "wrong secret", time.Now(), time.Minute))
	_, known := book.Published(c.ID)
	require.True(t, known)

	k.Forget(c.ID)
	_, known = book.Published(c.ID)
	assert.False(t, known, "no published state")
	f, err := book.Failure(ctx, c.ID)
	require.NoError(t, err)
	assert.Zero(t, f.Count, "no refused tokens")
	k.Changed(ctx, c.ID)
	_, known = book.Published(c.ID)
	assert.False(t, known, "a late recomputation does not track it again")
	assert.Empty(t, book.Tracked())
}
