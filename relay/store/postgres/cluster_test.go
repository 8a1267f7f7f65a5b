package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

func presence(session string, seq int64, view string, lease time.Time) store.Presence {
	return store.Presence{SessionID: session, ConnectionID: "conn_1", NodeID: "node-a", TokenID: "tok_1",
		Seq: seq, View: json.RawMessage(`{"v":"` + view + `"}`), LeaseUntil: lease}
}

// views lists the view of each open session of conn_1.
func views(t *testing.T, s *Store) []string {
	t.Helper()
	ps, err := s.PresenceOf(t.Context(), "conn_1", time.Now())
	require.NoError(t, err)
	var out []string
	for _, p := range ps {
		var v struct{ V string }
		require.NoError(t, json.Unmarshal(p.View, &v))
		out = append(out, p.SessionID+"="+v.V)
	}
	return out
}

// Refused tokens count in runs: each within the window of the one before
// adds one, an older one starts over, and a late write never moves the
// time back.
func TestAuthFailuresCountInRuns(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	const window = time.Minute
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	count := func() (int64, time.Time) {
		f, err := s.LastFailure(ctx, "conn_1")
		require.NoError(t, err)
		return f.Count, f.At
	}
	n, at := count()
	assert.Zero(t, n)
	assert.True(t, at.IsZero(), "no failure yet")

	require.NoError(t, s.NoteFailure(ctx, "conn_1", "one", t0, window))
	n, _ = count()
	assert.Equal(t, int64(1), n)
	require.NoError(t, s.NoteFailure(ctx, "conn_1", "two", t0.Add(30*time.Second), window))
	n, at = count()
	assert.Equal(t, int64(2), n, "within the window of the one before")
	assert.Equal(t, t0.Add(30*time.Second), at)
	require.NoError(t, s.NoteFailure(ctx, "conn_1", "late", t0.Add(10*time.Second), window))
	n, at = count()
	assert.Equal(t, int64(3), n)
	assert.Equal(t, t0.Add(30*time.Second), at, "a late write keeps the newest time")

	require.NoError(t, s.NoteFailure(ctx, "conn_1", "much later", t0.Add(30*time.Second+window), window))
	n, _ = count()
	assert.Equal(t, int64(1), n, "a refusal a window after the last starts a new run")
}

// Writes about a session may arrive in any order: the highest sequence
// number wins, and a tombstone is never reopened.
func TestPresenceWritesAreOrderedBySequence(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	lease := time.Now().Add(time.Minute)

	require.NoError(t, s.PutPresence(ctx, presence("s1", 1, "first", lease)))
	require.NoError(t, s.PutPresence(ctx, presence("s1", 3, "third", lease)))
	assert.ErrorIs(t, s.PutPresence(ctx, presence("s1", 2, "second", lease)), store.ErrStale)
	assert.Equal(t, []string{"s1=third"}, views(t, s), "a late, older write changes nothing")

	require.NoError(t, s.ClosePresence(ctx, presence("s1", 4, "closed", lease)))
	assert.Empty(t, views(t, s))
	assert.ErrorIs(t, s.PutPresence(ctx, presence("s1", 5, "after close", lease)), store.ErrStale, "a tombstone is never reopened")
	assert.Empty(t, views(t, s))

	// The close of s2 arrives before its first write.
	require.NoError(t, s.ClosePresence(ctx, presence("s2", 2, "closed", lease)))
	assert.ErrorIs(t, s.PutPresence(ctx, presence("s2", 1, "late", lease)), store.ErrStale)

	require.NoError(t, s.PutPresences(ctx, []store.Presence{
		presence("s3", 1, "three", lease), presence("s2", 3, "stale", lease), presence("s4", 1, "four", lease),
	}), "a batch skips its stale writes")
	assert.ElementsMatch(t, []string{"s3=three", "s4=four"}, views(t, s))
}

// Leases lapse: the sessions and nodes of a node that stopped renewing go,
// and the connections they served are named for a new status.
func TestPresenceExpires(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	now := time.Now()
	require.NoError(t, s.UpsertNode(ctx, store.Node{ID: "node-a", PeerURL: "ws://a", StartedAt: now, RenewedAt: now, LeaseUntil: now.Add(time.Second)}))
	require.NoError(t, s.UpsertNode(ctx, store.Node{ID: "node-b", PeerURL: "ws://b", StartedAt: now, RenewedAt: now, LeaseUntil: now.Add(time.Hour)}))
	require.NoError(t, s.PutPresence(ctx, presence("s1", 1, "on a", now.Add(time.Second))))
	nodes, err := s.Nodes(ctx, now)
	require.NoError(t, err)
	require.Len(t, nodes, 2)
	assert.Equal(t, 1, nodes[0].Sessions, "node-a counts its session")

	require.NoError(t, s.RenewPresence(ctx, "node-a", now.Add(time.Minute)))
	conns, err := s.ExpirePresence(ctx, now.Add(2*time.Second), time.Hour)
	require.NoError(t, err)
	assert.Empty(t, conns, "a renewed session stays")
	assert.Len(t, views(t, s), 1)

	conns, err = s.ExpirePresence(ctx, now.Add(2*time.Minute), time.Hour)
	require.NoError(t, err)
	assert.Equal(t, []string{"conn_1"}, conns)
	nodes, err = s.Nodes(ctx, now.Add(2*time.Minute))
	require.NoError(t, err)
	require.Len(t, nodes, 1)
	assert.Equal(t, "node-b", nodes[0].ID)
}

// Publishers of one connection on several nodes are serialized: a change
// seen by all of them at once is published once.
func TestPublishIsOncePerChange(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	c := store.Connection{ID: "conn_1", Workspace: "acme", Name: "gitlab", CreatedAt: time.Now()}
	require.NoError(t, s.CreateConnection(ctx, c, store.Token{ID: "tok_1", Hash: []byte("h"), CreatedAt: c.CreatedAt}))

	publish := func(to string) {
		_, err := s.Publish(ctx, "conn_1", time.Now(), func(snap store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
			next := store.PublishedState{Tunnel: to, Auth: "active", Allowlist: "configured"}
			if snap.Known && snap.Prev == next {
				return next, nil, nil
			}
			body, _ := json.Marshal(map[string]string{"from": snap.Prev.Tunnel, "to": to})
			return next, []store.EventRecord{{ConnectionID: "conn_1", Workspace: "acme", Body: body, Receivers: []string{"hook-1", "hook-2"}}}, nil
		})
		assert.NoError(t, err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { publish("connected") })
	}
	wg.Wait()
	evs, first, err := s.EventsAfter(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, evs, 1, "eight nodes saw the change; it is one event")
	assert.Equal(t, evs[0].ID, first)
	newest, err := s.NewestEvent(ctx)
	require.NoError(t, err)
	assert.Equal(t, evs[0].ID, newest)

	publish("disconnected")
	evs, _, err = s.EventsAfter(ctx, newest, 100)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.JSONEq(t, `{"from":"connected","to":"disconnected"}`, string(evs[0].Body))
}

// Deliveries are claimed by one node at a time and only for the receivers
// it has; a finished one is never claimed again.
func TestDeliveriesAreClaimedOnce(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	c := store.Connection{ID: "conn_1", Workspace: "acme", Name: "gitlab", CreatedAt: time.Now()}
	require.NoError(t, s.CreateConnection(ctx, c, store.Token{ID: "tok_1", Hash: []byte("h"), CreatedAt: c.CreatedAt}))
	for i := range 20 {
		_, err := s.Publish(ctx, "conn_1", time.Now(), func(store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
			body, _ := json.Marshal(map[string]int{"n": i})
			return store.PublishedState{Tunnel: "t", Auth: "a", Allowlist: "x"},
				[]store.EventRecord{{ConnectionID: "conn_1", Workspace: "acme", Body: body, Receivers: []string{"hook-1", "hook-2"}}}, nil
		})
		require.NoError(t, err)
	}

	claimed := make(chan []store.Delivery, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			ds, err := s.ClaimDeliveries(ctx, []string{"hook-1"}, 10, time.Now().Add(time.Minute))
			assert.NoError(t, err)
			claimed <- ds
		})
	}
	wg.Wait()
	close(claimed)
	seen := map[int64]bool{}
	for ds := range claimed {
		for _, d := range ds {
			assert.Equal(t, "hook-1", d.Receiver, "only the receivers asked for")
			assert.False(t, seen[d.EventID], "event %d claimed twice", d.EventID)
			seen[d.EventID] = true
		}
	}
	assert.Len(t, seen, 20, "four claimers of ten got every delivery of hook-1 once")

	again, err := s.ClaimDeliveries(ctx, []string{"hook-1"}, 100, time.Now().Add(time.Minute))
	require.NoError(t, err)
	assert.Empty(t, again, "claimed deliveries are not due until their claim ends")

	ds, err := s.ClaimDeliveries(ctx, []string{"hook-2"}, 2, time.Now().Add(time.Minute))
	require.NoError(t, err)
	require.Len(t, ds, 2)
	require.NoError(t, s.FinishDelivery(ctx, ds[0], true, time.Now()))
	require.NoError(t, s.FinishDelivery(ctx, ds[1], false, time.Now().Add(-time.Second)))
	retry, err := s.ClaimDeliveries(ctx, []string{"hook-2"}, 100, time.Now().Add(time.Minute))
	require.NoError(t, err)
	var ids []int64
	for _, d := range retry {
		ids = append(ids, d.EventID)
	}
	assert.Len(t, retry, 19, "the finished delivery is gone, the failed one is due again")
	assert.Contains(t, ids, ds[1].EventID)
	assert.NotContains(t, ids, ds[0].EventID)
	assert.Equal(t, 1, retry[0].Attempts, "the failed attempt is counted")
}

// Workspaces take turns in the claims: a workspace with a backlog of
// deliveries cannot hold back another workspace's newer event.
func TestDeliveriesTakeTurnsByWorkspace(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	for _, ws := range []string{"noisy", "quiet"} {
		c := store.Connection{ID: "conn_" + ws, Workspace: ws, Name: ws, CreatedAt: time.Now()}
		require.NoError(t, s.CreateConnection(ctx, c, store.Token{ID: "tok_" + ws, Hash: []byte("h"), CreatedAt: c.CreatedAt}))
	}
	publish := func(ws string, n int) {
		_, err := s.Publish(ctx, "conn_"+ws, time.Now(), func(store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
			body, _ := json.Marshal(map[string]any{"ws": ws, "n": n})
			return store.PublishedState{Tunnel: "t", Auth: "a", Allowlist: fmt.Sprint(n)},
				[]store.EventRecord{{ConnectionID: "conn_" + ws, Workspace: ws, Body: body, Receivers: []string{"hook"}}}, nil
		})
		require.NoError(t, err)
	}
	for i := range 30 {
		publish("noisy", i)
	}
	publish("quiet", 0)

	ds, err := s.ClaimDeliveries(ctx, []string{"hook"}, 4, time.Now().Add(time.Minute))
	require.NoError(t, err)
	var got []string
	for _, d := range ds {
		var b struct {
			WS string `json:"ws"`
			N  int    `json:"n"`
		}
		require.NoError(t, json.Unmarshal(d.Body, &b))
		got = append(got, fmt.Sprintf("%s/%d", b.WS, b.N))
	}
	assert.Equal(t, []string{"noisy/0", "quiet/0", "noisy/1", "noisy/2"}, got,
		"the quiet workspace's event is in the first claim, behind 30 of another's; each workspace's own stay in order")
}

// A notification reaches every listener of its channel.
func TestNotifyReachesListeners(t *testing.T) {
	s := openFresh(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan string, 1)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, []string{"postern_revoke"}, func() { close(ready) }, func(channel, payload string) {
			got <- channel + " " + payload
		})
	}()
	<-ready
	require.NoError(t, s.Notify(ctx, "postern_revoke", "conn_1"))
	select {
	case m := <-got:
		assert.Equal(t, "postern_revoke conn_1", m)
	case <-ctx.Done():
		t.Fatal("no notification")
	}
	cancel()
	<-done
}

// The duplicate flag of the published state survives in the store, so
// every node of a cluster announces a DUPLICATE_AGENT warning once.
func TestPublishedDuplicateIsKept(t *testing.T) {
	s := openFresh(t)
	ctx := t.Context()
	c := store.Connection{ID: "conn_1", Workspace: "acme", Name: "gitlab", CreatedAt: time.Now()}
	require.NoError(t, s.CreateConnection(ctx, c, store.Token{ID: "tok_1", Hash: []byte("h"), CreatedAt: c.CreatedAt}))
	var seen []store.PublishedState
	publish := func(dup bool) {
		_, err := s.Publish(ctx, "conn_1", time.Now(), func(snap store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
			seen = append(seen, snap.Prev)
			return store.PublishedState{Tunnel: "connected", Auth: "active", Allowlist: "configured", Duplicate: dup}, nil, nil
		})
		require.NoError(t, err)
	}
	publish(true)
	publish(false)
	publish(false)
	require.Len(t, seen, 3)
	assert.True(t, seen[1].Duplicate, "the duplicate published first was read back")
	assert.False(t, seen[2].Duplicate, "and its end too")
}
