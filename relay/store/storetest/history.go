package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

// event is a history record of type typ on connection connID at d after
// base; its body names it, so tests can tell records apart.
func event(connID, typ, name string, d time.Duration) store.EventRecord {
	body, _ := json.Marshal(map[string]string{"type": typ, "name": name})
	return store.EventRecord{ConnectionID: connID, Workspace: "acme", At: at(d), Body: body}
}

// names lists the records' names, in the order given.
func names(t *testing.T, recs []store.EventRecord) []string {
	t.Helper()
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		var b struct{ Name string }
		require.NoError(t, json.Unmarshal(r.Body, &b))
		out = append(out, b.Name)
	}
	return out
}

func testHistory(t *testing.T, s store.Store) {
	ctx := t.Context()
	var batch []store.EventRecord
	for i := range 6 {
		batch = append(batch, event("c1", "tunnel", fmt.Sprintf("t%d", i), time.Duration(i)*time.Minute))
	}
	batch = append(batch, event("c2", "tunnel", "other", time.Minute))
	require.NoError(t, s.AppendEvents(ctx, batch[:3]))
	require.NoError(t, s.AppendEvents(ctx, batch[3:]))
	require.NoError(t, s.AppendEvents(ctx, nil))

	all, err := s.ConnectionHistory(ctx, "c1", time.Time{}, 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"t0", "t1", "t2", "t3", "t4", "t5"}, names(t, all), "in the order appended, one connection only")
	for i, r := range all {
		assert.Equal(t, "c1", r.ConnectionID)
		assert.Equal(t, "acme", r.Workspace)
		assert.True(t, at(time.Duration(i)*time.Minute).Equal(r.At), "time kept exactly: %s", r.At)
		assert.Equal(t, time.UTC, r.At.Location())
		if i > 0 {
			assert.Greater(t, r.ID, all[i-1].ID, "ids increase")
		}
	}
	newest, err := s.ConnectionHistory(ctx, "c1", time.Time{}, 2)
	require.NoError(t, err)
	assert.Equal(t, []string{"t4", "t5"}, names(t, newest), "a limit keeps the newest, oldest first")
	since, err := s.ConnectionHistory(ctx, "c1", at(3*time.Minute), 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"t3", "t4", "t5"}, names(t, since), "since is inclusive")
	none, err := s.ConnectionHistory(ctx, "nope", time.Time{}, 100)
	require.NoError(t, err)
	assert.Empty(t, none)
	assert.NotNil(t, none, "no history is an empty slice")
}

func testPruneEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Only an existing connection keeps its newest events.
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	mustCreate(t, s, conn("c2", "acme", at(0)), "t2")
	require.NoError(t, s.AppendEvents(ctx, []store.EventRecord{
		event("c1", "tunnel", "old-tunnel-1", 0),
		event("c1", "auth", "old-auth", time.Minute),
		event("c1", "tunnel", "old-tunnel-2", 2*time.Minute),
		event("c1", "tunnel", "new-tunnel", 20*time.Minute),
		event("c2", "tunnel", "c2-old-1", 0),
		event("c2", "tunnel", "c2-old-2", time.Minute),
	}))
	n, err := s.PruneEvents(ctx, at(10*time.Minute))
	require.NoError(t, err)
	assert.EqualValues(t, 3, n, "old-tunnel-1, old-tunnel-2 and c2-old-1")

	c1, err := s.ConnectionHistory(ctx, "c1", time.Time{}, 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"old-auth", "new-tunnel"}, names(t, c1),
		"newer events stay, and so does the newest auth event however old")
	c2, err := s.ConnectionHistory(ctx, "c2", time.Time{}, 100)
	require.NoError(t, err)
	assert.Equal(t, []string{"c2-old-2"}, names(t, c2), "a connection's newest event of a type stays")

	n, err = s.PruneEvents(ctx, at(10*time.Minute))
	require.NoError(t, err)
	assert.Zero(t, n, "nothing more to prune")
}

func testPruneManyEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	const count = 12_000 // more than one pruning batch
	mustCreate(t, s, conn("c1", "acme", at(0)), "t1")
	batch := make([]store.EventRecord, 0, count)
	for i := range count {
		batch = append(batch, event("c1", "tunnel", fmt.Sprint(i), time.Duration(i)*time.Millisecond))
	}
	require.NoError(t, s.AppendEvents(ctx, batch))
	n, err := s.PruneEvents(ctx, at(time.Hour))
	require.NoError(t, err)
	assert.EqualValues(t, count-1, n)
	left, err := s.ConnectionHistory(ctx, "c1", time.Time{}, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{fmt.Sprint(count - 1)}, names(t, left), "the newest stays")
}
