package history

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, st.Close()) })
	return st
}

// TestRecorderWritesInOrderAndFlushesOnStop: what is offered is written in
// order, also what is still queued when the relay stops.
func TestRecorderWritesInOrderAndFlushesOnStop(t *testing.T) {
	st := openStore(t)
	r := NewRecorder(st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	for i := range 10 {
		r.Offer(api.Event{ID: "99", Type: "tunnel", ConnectionID: "c1", Workspace: "w", Time: t0.Add(time.Duration(i) * time.Second), To: string(rune('a' + i))})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stopped before it ran: the queue is written anyway
	r.Run(ctx)
	recs, err := st.ConnectionHistory(context.Background(), "c1", time.Time{}, 100)
	require.NoError(t, err)
	require.Len(t, recs, 10)
	for i, rec := range recs {
		var e api.Event
		require.NoError(t, json.Unmarshal(rec.Body, &e))
		assert.Equal(t, string(rune('a'+i)), e.To)
		assert.Empty(t, e.ID, "the history numbers its own records")
		assert.True(t, e.Time.Equal(rec.At))
	}
	assert.Zero(t, dropped(t, r))
}

// TestRecorderDropsWhenFull: a full queue never blocks the caller; what
// does not fit is counted.
func TestRecorderDropsWhenFull(t *testing.T) {
	r := NewRecorder(openStore(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	for range QueueSize + 7 {
		r.Offer(api.Event{Type: "tunnel", ConnectionID: "c1", Time: t0})
	}
	assert.Equal(t, 7.0, dropped(t, r))
}

// TestPrunerKeepsTheNewest: pruning by age keeps what is younger than the
// retention and each connection's newest transition.
func TestPrunerKeepsTheNewest(t *testing.T) {
	st := openStore(t)
	now := time.Now()
	old := func(d time.Duration, to string) store.EventRecord {
		body, _ := json.Marshal(api.Event{Type: "tunnel", To: to, Time: now.Add(-d)})
		return store.EventRecord{ConnectionID: "c1", Workspace: "w", At: now.Add(-d), Body: body}
	}
	// Only an existing connection keeps its newest transition.
	require.NoError(t, st.CreateConnection(t.Context(), store.Connection{ID: "c1", Workspace: "w", Name: "n", CreatedAt: now.Add(-50 * 24 * time.Hour)},
		store.Token{ID: "t1", Hash: []byte("h"), CreatedAt: now}))
	require.NoError(t, st.AppendEvents(t.Context(), []store.EventRecord{
		old(40*24*time.Hour, "connected"), old(35*24*time.Hour, "disconnected"), old(31*24*time.Hour, "connected"),
	}))
	NewPruner(st, DefaultRetention, slog.New(slog.DiscardHandler)).Prune(t.Context(), now)
	recs, err := st.ConnectionHistory(t.Context(), "c1", time.Time{}, 100)
	require.NoError(t, err)
	require.Len(t, recs, 1, "older than 30 days, but the newest: it says since when the tunnel is up")
	require.NoError(t, st.AppendEvents(t.Context(), []store.EventRecord{old(time.Hour, "disconnected")}))
	NewPruner(st, DefaultRetention, slog.New(slog.DiscardHandler)).Prune(t.Context(), now)
	recs, err = st.ConnectionHistory(t.Context(), "c1", time.Time{}, 100)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.True(t, recs[0].At.Equal(now.Add(-time.Hour)))
}

func dropped(t *testing.T, r *Recorder) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, r.dropped.Write(&m))
	return m.GetCounter().GetValue()
}
