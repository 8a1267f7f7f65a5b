// Package storetest is the behaviour suite every store.Store implementation
// must pass, so the SQLite and PostgreSQL stores cannot drift apart. An
// implementation's tests call Run with a function that opens an empty
// store.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

// Run runs the suite. open must return a new, empty store for each call
// and arrange for it to be closed when the test ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := map[string]func(t *testing.T, s store.Store){
		"create and get connection":             testCreateGetConnection,
		"create connection fills token owner":   testCreateFillsTokenOwner,
		"create connection refuses other owner": testCreateRefusesOtherOwner,
		"create connection conflict":            testCreateConnectionConflict,
		"create connection is atomic":           testCreateConnectionAtomic,
		"get missing connection":                testGetMissing,
		"list connections":                      testListConnections,
		"revoke connection":                     testRevokeConnection,
		"delete connection":                     testDeleteConnection,
		"deleted connection's events":           testDeletedConnectionEvents,
		"delete connection's cluster rows":      testDeleteClusterRows,
		"rotate token":                          testRotateToken,
		"rotate token of missing connection":    testRotateMissing,
		"rotate token conflict":                 testRotateConflict,
		"mark connected and seen":               testMarkConnectedSeen,
		"mark missing connection":               testMarkMissing,
		"api keys":                              testAPIKeys,
		"list api keys":                         testListAPIKeys,
		"revoke api key":                        testRevokeAPIKey,
		"mark api key used":                     testMarkAPIKeyUsed,
		"times are utc and exact":               testTimesUTC,
		"concurrent writes":                     testConcurrentWrites,
		"ping":                                  testPing,
		"history":                               testHistory,
		"prune events":                          testPruneEvents,
		"prune many events":                     testPruneManyEvents,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			fn(t, open(t))
		})
	}
}

// base is a fixed instant with sub-millisecond digits, so precision loss
// shows. Microseconds are the finest PostgreSQL keeps.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func ptr(t time.Time) *time.Time { return &t }

func conn(id, workspace string, created time.Time) store.Connection {
	return store.Connection{ID: id, Workspace: workspace, Name: "net " + id, CreatedAt: created}
}

func token(id, connID string, created time.Time) store.Token {
	return store.Token{ID: id, ConnectionID: connID, Hash: []byte("hash-of-" + id), CreatedAt: created}
}

func mustCreate(t *testing.T, s store.Store, c store.Connection, tokID string) {
	t.Helper()
	require.NoError(t, s.CreateConnection(t.Context(), c, token(tokID, c.ID, c.CreatedAt)))
}

func assertTimeEqual(t *testing.T, want, got *time.Time, field string) {
	t.Helper()
	if want == nil {
		assert.Nil(t, got, field)
		return
	}
	if assert.NotNil(t, got, field) {
		assert.True(t, want.Equal(*got), "%s: want %s, got %s", field, want, got)
	}
}

func testCreateGetConnection(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := conn("c1", "acme", at(0))
	tok := token("t1", "c1", at(0))
	tok.ExpiresAt = ptr(at(time.Hour))
	require.NoError(t, s.CreateConnection(ctx, c, tok))

	got, err := s.GetConnection(ctx, "c1")
	require.NoError(t, err)
	assert.Equal(t, "c1", got.ID)
	assert.Equal(t, "acme", got.Workspace)
	assert.Equal(t, "net c1", got.Name)
	assertTimeEqual(t, &c.CreatedAt, &got.CreatedAt, "created_at")
	assert.Nil(t, got.RevokedAt)
	assert.Nil(t, got.FirstConnectedAt)
	assert.Nil(t, got.LastSeenAt)
	assert.False(t, got.Revoked())

	gotTok, err := s.GetToken(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, "c1", gotTok.ConnectionID)
	assert.Equal(t, []byte("hash-of-t1"), gotTok.Hash)
	assertTimeEqual(t, &tok.CreatedAt, &gotTok.CreatedAt, "token created_at")
	assertTimeEqual(t, tok.ExpiresAt, gotTok.ExpiresAt, "token expires_at")
}

func testCreateFillsTokenOwner(t *testing.T, s store.Store) {
	tok := token("t1", "", at(0))
	require.NoError(t, s.CreateConnection(t.Context(), conn("c1", "acme", at(0)), tok))
	got, err := s.GetToken(t.Context(), "t1")
	require.NoError(t, err)
	assert.Equal(t, "c1", got.ConnectionID)
}

func testCreateRefusesOtherOwner(t *testing.T, s store.Store) {
	err := s.CreateConnection(t.Context(), conn("c1", "acme", at(0)), token("t1", "c2", at(0)))
	require.Error(t, err)
	_, err = s.GetConnection(t.Context(), "c1")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testCreateConnectionConflict(t *testing.T, s store.Store) {
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	err := s.CreateConnection(t.Context(), conn("c1", "other", at(time.Second)), token("t2", "c1", at(0)))
	require.ErrorIs(t, err, store.ErrConflict)

	got, err := s.GetConnection(t.Context(), "c1")
	require.NoError(t, err)
	assert.Equal(t, "acme", got.Workspace, "the first connection is kept")
}

func testCreateConnectionAtomic(t *testing.T, s store.Store) {
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	// The token id is taken, so neither row may be written.
	err := s.CreateConnection(t.Context(), conn("c2", "acme", at(0)), token("t1", "c2", at(0)))
	require.ErrorIs(t, err, store.ErrConflict)
	_, err = s.GetConnection(t.Context(), "c2")
	require.ErrorIs(t, err, store.ErrNotFound)
	tok, err := s.GetToken(t.Context(), "t1")
	require.NoError(t, err)
	assert.Equal(t, "c1", tok.ConnectionID)
}

func testGetMissing(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetConnection(ctx, "nope")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetToken(ctx, "nope")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetAPIKey(ctx, "nope")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.RevokeConnection(ctx, "nope", at(0))
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func testListConnections(t *testing.T, s store.Store) {
	ctx := t.Context()
	empty, err := s.ListConnections(ctx, "")
	require.NoError(t, err)
	assert.NotNil(t, empty)
	assert.Empty(t, empty)

	// Inserted out of order; "b" and "a" share a creation time, so the id
	// breaks the tie.
	mustCreate(t, s, conn("c", "acme", at(2*time.Second)), "tc")
	mustCreate(t, s, conn("b", "other", at(time.Second)), "tb")
	mustCreate(t, s, conn("a", "acme", at(time.Second)), "ta")
	mustCreate(t, s, conn("d", "acme", at(-time.Hour)), "td")

	ids := func(cs []store.Connection) []string {
		out := make([]string, 0, len(cs))
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	for name, tc := range map[string]struct {
		workspace string
		want      []string
	}{
		"all":             {"", []string{"d", "a", "b", "c"}},
		"one workspace":   {"acme", []string{"d", "a", "c"}},
		"other":           {"other", []string{"b"}},
		"empty workspace": {"none", []string{}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := s.ListConnections(ctx, tc.workspace)
			require.NoError(t, err)
			assert.Equal(t, tc.want, ids(got))
		})
	}
}

func testRevokeConnection(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")

	got, err := s.RevokeConnection(ctx, "c1", at(time.Minute))
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at(time.Minute)), got.RevokedAt, "revoked_at")
	assert.Equal(t, "acme", got.Workspace)

	again, err := s.RevokeConnection(ctx, "c1", at(time.Hour))
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at(time.Minute)), again.RevokedAt, "revoked_at after second revoke")

	stored, err := s.GetConnection(ctx, "c1")
	require.NoError(t, err)
	assert.True(t, stored.Revoked())
	assertTimeEqual(t, ptr(at(time.Minute)), stored.RevokedAt, "stored revoked_at")
}

func testRotateToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	mustCreate(t, s, conn("c2", "acme", at(0)), "other")

	// t-early already expires before the overlap ends; t-late after it.
	early := token("t-early", "c1", at(0))
	early.ExpiresAt = ptr(at(time.Minute))
	require.NoError(t, s.RotateToken(ctx, early, at(24*time.Hour)))
	late := token("t-late", "c1", at(0))
	late.ExpiresAt = ptr(at(1000 * time.Hour))
	require.NoError(t, s.RotateToken(ctx, late, at(24*time.Hour)))

	until := at(time.Hour)
	require.NoError(t, s.RotateToken(ctx, token("t2", "c1", at(time.Second)), until))

	for name, want := range map[string]*time.Time{
		"t1":      ptr(until),
		"t-late":  ptr(until),
		"t-early": ptr(at(time.Minute)),
		"t2":      nil,
		"other":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := s.GetToken(ctx, name)
			require.NoError(t, err)
			assertTimeEqual(t, want, got.ExpiresAt, "expires_at")
		})
	}

	t2, err := s.GetToken(ctx, "t2")
	require.NoError(t, err)
	assert.True(t, t2.ValidAt(at(10000*time.Hour)))
	t1, err := s.GetToken(ctx, "t1")
	require.NoError(t, err)
	assert.True(t, t1.ValidAt(until.Add(-time.Nanosecond)))
	assert.False(t, t1.ValidAt(until))
}

func testRotateMissing(t *testing.T, s store.Store) {
	err := s.RotateToken(t.Context(), token("t1", "nope", at(0)), at(time.Hour))
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetToken(t.Context(), "t1")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testRotateConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	err := s.RotateToken(ctx, token("t1", "c1", at(time.Second)), at(time.Hour))
	require.ErrorIs(t, err, store.ErrConflict)
	got, err := s.GetToken(ctx, "t1")
	require.NoError(t, err)
	assert.Nil(t, got.ExpiresAt, "a failed rotation must not shorten the old token")
}

func testMarkConnectedSeen(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")

	require.NoError(t, s.MarkSeen(ctx, "c1", at(time.Second)))
	c, err := s.GetConnection(ctx, "c1")
	require.NoError(t, err)
	assert.Nil(t, c.FirstConnectedAt, "seen alone is not a first connection")
	assertTimeEqual(t, ptr(at(time.Second)), c.LastSeenAt, "last_seen_at")

	steps := []struct {
		name      string
		connected bool
		at        time.Time
		wantFirst time.Time
		wantSeen  time.Time
	}{
		{"first connect", true, at(time.Minute), at(time.Minute), at(time.Minute)},
		{"seen later", false, at(2 * time.Minute), at(time.Minute), at(2 * time.Minute)},
		{"seen out of order", false, at(90 * time.Second), at(time.Minute), at(2 * time.Minute)},
		{"reconnect", true, at(time.Hour), at(time.Minute), at(time.Hour)},
		{"stale reconnect", true, at(30 * time.Minute), at(time.Minute), at(time.Hour)},
	}
	for _, st := range steps {
		if st.connected {
			require.NoError(t, s.MarkConnected(ctx, "c1", st.at), st.name)
		} else {
			require.NoError(t, s.MarkSeen(ctx, "c1", st.at), st.name)
		}
		c, err := s.GetConnection(ctx, "c1")
		require.NoError(t, err, st.name)
		assertTimeEqual(t, &st.wantFirst, c.FirstConnectedAt, st.name+": first_connected_at")
		assertTimeEqual(t, &st.wantSeen, c.LastSeenAt, st.name+": last_seen_at")
	}
}

func testMarkMissing(t *testing.T, s store.Store) {
	require.ErrorIs(t, s.MarkConnected(t.Context(), "nope", at(0)), store.ErrNotFound)
	require.ErrorIs(t, s.MarkSeen(t.Context(), "nope", at(0)), store.ErrNotFound)
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	n, err := s.CountAPIKeys(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)

	keys := map[string]store.APIKey{
		"admin":   {ID: "k1", Name: "bootstrap", Admin: true, Hash: []byte("h1"), CreatedAt: at(0)},
		"scoped":  {ID: "k2", Name: "ci", Workspace: "acme", Hash: []byte("h2"), CreatedAt: at(time.Second)},
		"revoked": {ID: "k3", Name: "old", Workspace: "acme", Hash: []byte("h3"), CreatedAt: at(0), RevokedAt: ptr(at(time.Hour))},
	}
	for _, k := range keys {
		require.NoError(t, s.CreateAPIKey(ctx, k))
	}
	for name, want := range keys {
		t.Run(name, func(t *testing.T) {
			got, err := s.GetAPIKey(ctx, want.ID)
			require.NoError(t, err)
			assert.Equal(t, want.Name, got.Name)
			assert.Equal(t, want.Workspace, got.Workspace)
			assert.Equal(t, want.Admin, got.Admin)
			assert.Equal(t, want.Hash, got.Hash)
			assertTimeEqual(t, &want.CreatedAt, &got.CreatedAt, "created_at")
			assertTimeEqual(t, want.RevokedAt, got.RevokedAt, "revoked_at")
		})
	}

	n, err = s.CountAPIKeys(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(keys), n)

	err = s.CreateAPIKey(ctx, store.APIKey{ID: "k1", Name: "dup", Workspace: "x", Hash: []byte("h"), CreatedAt: at(0)})
	require.ErrorIs(t, err, store.ErrConflict)
	got, err := s.GetAPIKey(ctx, "k1")
	require.NoError(t, err)
	assert.True(t, got.Admin, "the first key is kept")
}

func testTimesUTC(t *testing.T, s store.Store) {
	ctx := t.Context()
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	created := base.In(zone)
	require.NoError(t, s.CreateConnection(ctx, conn("c1", "acme", created), token("t1", "c1", created)))

	got, err := s.GetConnection(ctx, "c1")
	require.NoError(t, err)
	assert.Equal(t, time.UTC, got.CreatedAt.Location())
	assert.True(t, base.Equal(got.CreatedAt), "want %s, got %s", base, got.CreatedAt)

	// Ordering must follow the instant, not the local wall clock: this one
	// is earlier in time but later on its own wall clock.
	earlier := base.Add(-time.Hour).In(time.FixedZone("UTC-8", -8*3600))
	mustCreate(t, s, conn("c0", "acme", earlier), "t0")
	list, err := s.ListConnections(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "c0", list[0].ID)
}

func testConcurrentWrites(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustCreate(t, s, conn("c0", "acme", at(0)), "t0")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("c%02d", i+1)
			errs <- s.CreateConnection(ctx, conn(id, "acme", at(time.Duration(i)*time.Millisecond)),
				token("t"+id, id, at(0)))
		})
		wg.Go(func() { errs <- s.MarkSeen(ctx, "c0", at(time.Duration(i)*time.Second)) })
		wg.Go(func() {
			_, err := s.ListConnections(ctx, "acme")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	list, err := s.ListConnections(ctx, "")
	require.NoError(t, err)
	assert.Len(t, list, n+1)
	c0, err := s.GetConnection(ctx, "c0")
	require.NoError(t, err)
	assertTimeEqual(t, ptr(at((n-1)*time.Second)), c0.LastSeenAt, "last_seen_at is the latest")
}

func testPing(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Ping(ctx))
}
