package events

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
)

// waitFor bounds every wait: publishing and delivery take microseconds.
const waitFor = 5 * time.Second

func TestRingEvictsOldest(t *testing.T) {
	t.Parallel()
	b := NewBus(4, 100)
	all := func(api.Event) bool { return true }
	for i := range 6 {
		b.Publish(api.Event{Type: api.EventTunnel, ConnectionID: "c" + strconv.Itoa(i)})
	}
	// Kept: ids 102..105.
	tests := map[string]struct {
		lastID string
		want   []string
		gap    bool
	}{
		"just before the oldest kept": {lastID: "101", want: []string{"102", "103", "104", "105"}},
		"in the middle":               {lastID: "103", want: []string{"104", "105"}},
		"the newest":                  {lastID: "105"},
		"evicted":                     {lastID: "100", gap: true},
		"never issued":                {lastID: "106", gap: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sub, replay, newest, err := b.Subscribe(t.Context(), all, tt.lastID)
			defer b.Unsubscribe(sub)
			assert.Equal(t, "105", newest)
			if tt.gap {
				assert.ErrorIs(t, err, ErrResumeGap)
				assert.Empty(t, replay)
				return
			}
			require.NoError(t, err)
			var ids []string
			for _, e := range replay {
				ids = append(ids, e.ID)
			}
			assert.Equal(t, tt.want, ids)
		})
	}
}

func TestSlowSubscriberDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	b := NewBus(RingSize, 1)
	all := func(api.Event) bool { return true }
	slow, _, _, err := b.Subscribe(t.Context(), all, "")
	require.NoError(t, err)
	fast, _, _, err := b.Subscribe(t.Context(), all, "")
	require.NoError(t, err)

	// Publish in batches the reading subscriber keeps up with; the other
	// one reads nothing at all.
	const batch, batches = SubscriberBuffer / 2, 8
	var got []string
	for range batches {
		published := make(chan struct{})
		go func() {
			defer close(published)
			for range batch {
				b.Publish(api.Event{Type: api.EventTunnel})
			}
		}()
		select {
		case <-published:
		case <-time.After(waitFor):
			require.FailNow(t, "publishing blocked on a subscriber that never reads")
		}
		for range batch {
			select {
			case e := <-fast.C():
				got = append(got, e.ID)
			case <-time.After(waitFor):
				require.FailNow(t, "the reading subscriber got too few events")
			}
		}
	}
	assert.Len(t, got, batch*batches, "the reading subscriber got every event")
	select {
	case <-fast.Dropped():
		assert.Fail(t, "the reading subscriber was dropped")
	default:
	}
	select {
	case <-slow.Dropped():
	default:
		assert.Fail(t, "the subscriber that never reads was not dropped")
	}
	assert.Len(t, slow.C(), SubscriberBuffer, "it kept what fitted")
}

// A bus that follows a shared log: ids come from the log, a live
// subscriber gets what is delivered after it subscribed, and a resume from
// before the bus started reads the log.
func TestFollowerBusNumbersAsTheLog(t *testing.T) {
	t.Parallel()
	log := []api.Event{}
	for i := 1; i <= 7; i++ {
		log = append(log, api.Event{ID: strconv.Itoa(i), Type: api.EventTunnel, ConnectionID: "c"})
	}
	b := NewBus(RingSize, uint64(time.Now().UnixMicro()))
	b.SetHistory(func(_ context.Context, after uint64, limit int) ([]api.Event, uint64, error) {
		return log[min(int(after), len(log)):], 1, nil
	})
	b.StartAt(5) // events 1..5 were published before this node started
	all := func(api.Event) bool { return true }

	live, replay, newest, err := b.Subscribe(t.Context(), all, "")
	require.NoError(t, err)
	assert.Empty(t, replay)
	assert.Equal(t, "5", newest, "a new stream starts after the log's newest event")

	b.Deliver(log[5])
	b.Deliver(log[4]) // already seen: dropped
	b.Deliver(log[6])
	for _, want := range []string{"6", "7"} {
		select {
		case e := <-live.C():
			assert.Equal(t, want, e.ID)
		case <-time.After(waitFor):
			require.FailNow(t, "a delivered event did not reach the live stream", want)
		}
	}

	resumed, replay, _, err := b.Subscribe(t.Context(), all, "2")
	defer b.Unsubscribe(resumed)
	require.NoError(t, err)
	var ids []string
	for _, e := range replay {
		ids = append(ids, e.ID)
	}
	assert.Equal(t, []string{"3", "4", "5", "6", "7"}, ids, "a resume from before the start reads the log, then the ring")
}

func TestRingIsBoundedByBytes(t *testing.T) {
	t.Parallel()
	b := NewBus(RingSize, 10) // ids of two digits throughout
	small := api.Event{Type: api.EventTunnel, ConnectionID: "c1", From: "connected", To: "disconnected"}
	b.maxBytes = 10 * Size(api.Event{ID: "10", Type: small.Type, ConnectionID: small.ConnectionID, From: small.From, To: small.To})
	for range 25 {
		b.Publish(small)
	}
	assert.Len(t, b.Kept(), 10, "the byte bound holds fewer than RingSize events")
	assert.LessOrEqual(t, b.bytes, b.maxBytes)

	// A large event makes room by evicting as many small ones as it takes.
	big := small
	big.Workspace = strings.Repeat("w", 5*b.maxBytes/10)
	b.Publish(big)
	kept := b.Kept()
	assert.Equal(t, big.Workspace, kept[len(kept)-1].Workspace, "the newest is always kept")
	assert.LessOrEqual(t, b.bytes, b.maxBytes)
	total := 0
	for _, e := range kept {
		total += Size(e)
	}
	assert.Equal(t, b.bytes, total, "the count matches what is kept")

	// Resuming from an evicted id is a gap, from a kept one is not.
	sub, _, _, err := b.Subscribe(t.Context(), func(api.Event) bool { return true }, "10")
	b.Unsubscribe(sub)
	assert.ErrorIs(t, err, ErrResumeGap)
	sub, replay, _, err := b.Subscribe(t.Context(), func(api.Event) bool { return true }, kept[0].ID)
	b.Unsubscribe(sub)
	require.NoError(t, err)
	assert.Len(t, replay, len(kept)-1)
}
