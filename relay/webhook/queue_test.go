package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/events"
)

func ev(ws string, n int) api.Event {
	return api.Event{ID: fmt.Sprint(n), Type: api.EventAllowlist, Workspace: ws, ConnectionID: "conn-" + ws, From: "configured", To: "empty"}
}

func TestQueueTakesWorkspacesInTurn(t *testing.T) {
	t.Parallel()
	q := newFairQueue()
	for i := range 500 {
		require.True(t, q.push(ev("flood", i)))
	}
	require.True(t, q.push(ev("quiet", 1000)))
	require.True(t, q.push(ev("other", 2000)))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var order []string
	for range 4 {
		e, ok := q.next(ctx)
		require.True(t, ok)
		order = append(order, e.Workspace+"/"+e.ID)
	}
	assert.Equal(t, []string{"flood/0", "quiet/1000", "other/2000", "flood/1"}, order,
		"a workspace's event waits behind at most one event of each other workspace")
	assert.Equal(t, 498, q.len())
}

func TestQueueBoundsEachWorkspaceAndTheWhole(t *testing.T) {
	t.Parallel()
	q := newFairQueue()
	kept := 0
	for i := range 10 * QueueSize {
		if q.push(ev("flood", i)) {
			kept++
		}
	}
	assert.Equal(t, QueueSize, kept, "one workspace fills its own share only")
	assert.True(t, q.push(ev("victim", 1)), "another workspace's event still fits")

	t.Run("by bytes", func(t *testing.T) {
		q := newFairQueue()
		big := ev("fat", 0)
		big.ConnectionID = strings.Repeat("c", 8<<10)
		n := 0
		for q.push(big) {
			n++
		}
		assert.Equal(t, QueueBytes/events.Size(big), n)
		assert.LessOrEqual(t, q.bytes, QueueBytes)
		assert.True(t, q.push(ev("victim", 1)))
	})
	t.Run("all workspaces together", func(t *testing.T) {
		q := newFairQueue()
		big := ev("", 0)
		big.ConnectionID = strings.Repeat("c", 8<<10)
		for ws := 0; ; ws++ {
			big.Workspace = fmt.Sprint("ws-", ws)
			if !q.push(big) {
				break
			}
		}
		assert.LessOrEqual(t, q.bytes, MaxQueueBytes)
		assert.Greater(t, q.bytes, MaxQueueBytes-events.Size(big))
	})
}

func TestQueueNextWaitsAndStops(t *testing.T) {
	t.Parallel()
	q := newFairQueue()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan api.Event, 1)
	go func() {
		e, _ := q.next(ctx)
		got <- e
	}()
	q.push(ev("w", 7))
	select {
	case e := <-got:
		assert.Equal(t, "7", e.ID)
	case <-time.After(5 * time.Second):
		t.Fatal("next did not wake for a pushed event")
	}
	cancel()
	_, ok := q.next(ctx)
	assert.False(t, ok, "an ended context stops the wait")
}
