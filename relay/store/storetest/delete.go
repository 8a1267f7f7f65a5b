package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

func testDeleteConnection(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	require.NoError(t, s.RotateToken(ctx, token("t2", "c1", at(time.Second)), at(time.Hour)))
	mustCreate(t, s, conn("c2", "acme", at(time.Second)), "other")

	require.ErrorIs(t, s.DeleteConnection(ctx, "c1"), store.ErrNotRevoked, "an active connection is not deleted")
	_, err := s.GetConnection(ctx, "c1")
	require.NoError(t, err, "a refused delete keeps the connection")
	_, err = s.GetToken(ctx, "t1")
	require.NoError(t, err, "and its tokens")
	require.ErrorIs(t, s.DeleteConnection(ctx, "nope"), store.ErrNotFound)

	_, err = s.RevokeConnection(ctx, "c1", at(time.Minute))
	require.NoError(t, err)
	require.NoError(t, s.DeleteConnection(ctx, "c1"))

	_, err = s.GetConnection(ctx, "c1")
	assert.ErrorIs(t, err, store.ErrNotFound)
	for _, tok := range []string{"t1", "t2"} {
		_, err = s.GetToken(ctx, tok)
		assert.ErrorIs(t, err, store.ErrNotFound, "token %s goes with its connection", tok)
	}
	list, err := s.ListConnections(ctx, "")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "c2", list[0].ID)
	other, err := s.GetToken(ctx, "other")
	require.NoError(t, err, "another connection's token stays")
	assert.Equal(t, "c2", other.ConnectionID)

	assert.ErrorIs(t, s.DeleteConnection(ctx, "c1"), store.ErrNotFound, "deleting twice")
	_, err = s.RevokeConnection(ctx, "c1", at(time.Hour))
	assert.ErrorIs(t, err, store.ErrNotFound)
	assert.ErrorIs(t, s.MarkSeen(ctx, "c1", at(time.Hour)), store.ErrNotFound)
	assert.ErrorIs(t, s.RotateToken(ctx, token("t3", "c1", at(time.Hour)), at(time.Hour)), store.ErrNotFound)
}

// testDeletedConnectionEvents: a deleted connection's status events stay
// (the event log has its own retention), and pruning takes all of them,
// its newest of each type too, while another connection keeps its newest.
func testDeletedConnectionEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	mustCreate(t, s, conn("c2", "acme", at(0)), "t2")
	require.NoError(t, s.AppendEvents(ctx, []store.EventRecord{
		event("c1", "tunnel", "c1-tunnel", 0),
		event("c1", "auth", "c1-auth", time.Minute),
		event("c2", "tunnel", "c2-tunnel", 0),
	}))
	_, err := s.RevokeConnection(ctx, "c1", at(time.Minute))
	require.NoError(t, err)
	require.NoError(t, s.DeleteConnection(ctx, "c1"))

	kept, err := s.ConnectionHistory(ctx, "c1", time.Time{}, 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"c1-tunnel", "c1-auth"}, names(t, kept), "deleting leaves the event log alone")

	n, err := s.PruneEvents(ctx, at(10*time.Minute))
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "both of c1's events, though each is its newest of a type")
	kept, err = s.ConnectionHistory(ctx, "c1", time.Time{}, 100)
	require.NoError(t, err)
	assert.Empty(t, kept)
	c2, err := s.ConnectionHistory(ctx, "c2", time.Time{}, 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"c2-tunnel"}, names(t, c2), "an existing connection keeps its newest")
}

// testDeleteClusterRows: in a store a cluster shares, deleting a
// connection drops its published state, its refused-token record and its
// open sessions; a closed session's tombstone stays until it expires, so
// a late write still cannot reopen it. Stores without a cluster skip it.
func testDeleteClusterRows(t *testing.T, s store.Store) {
	cl, ok := s.(store.Cluster)
	if !ok {
		t.Skip("the store keeps no cluster state")
	}
	ctx := t.Context()
	now := time.Now().UTC()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	mustCreate(t, s, conn("c2", "acme", at(0)), "t2")
	for _, id := range []string{"c1", "c2"} {
		seedClusterRows(t, cl, id, now)
	}
	_, err := s.RevokeConnection(ctx, "c1", at(time.Minute))
	require.NoError(t, err)
	require.NoError(t, s.DeleteConnection(ctx, "c1"))

	watched, err := cl.Watched(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"c2"}, watched, "c1's published state is gone")
	f, err := cl.LastFailure(ctx, "c1")
	require.NoError(t, err)
	assert.True(t, f.At.IsZero(), "c1's refused-token record is gone")
	ps, err := cl.PresenceOf(ctx, "c1", now)
	require.NoError(t, err)
	assert.Empty(t, ps, "c1's open session is gone")
	late := session("c1", "c1-closed", 1, now)
	assert.ErrorIs(t, cl.PutPresence(ctx, late), store.ErrStale, "the tombstone still stops a late write")

	f, err = cl.LastFailure(ctx, "c2")
	require.NoError(t, err)
	assert.EqualValues(t, 1, f.Count, "c2 keeps its rows")
	ps, err = cl.PresenceOf(ctx, "c2", now)
	require.NoError(t, err)
	assert.Len(t, ps, 1)
}

// seedClusterRows gives connection id a published state, a refused
// token, an open session and a closed one.
func seedClusterRows(t *testing.T, cl store.Cluster, id string, now time.Time) {
	t.Helper()
	ctx := t.Context()
	_, err := cl.Publish(ctx, id, now, func(store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
		return store.PublishedState{Tunnel: "revoked", Auth: "revoked", Allowlist: "unknown"}, nil, nil
	})
	require.NoError(t, err)
	require.NoError(t, cl.NoteFailure(ctx, id, "wrong secret", now, time.Minute))
	require.NoError(t, cl.PutPresence(ctx, session(id, id+"-open", 1, now)))
	require.NoError(t, cl.ClosePresence(ctx, session(id, id+"-closed", 2, now)))
}

func session(connID, id string, seq int64, now time.Time) store.Presence {
	return store.Presence{SessionID: id, ConnectionID: connID, NodeID: "node-a", TokenID: "t",
		Seq: seq, View: json.RawMessage(`{}`), LeaseUntil: now.Add(time.Minute)}
}
