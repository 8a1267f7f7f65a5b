package webhook

import (
	"context"
	"sync"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/events"
)

// fairQueue holds a receiver's waiting events by workspace: each
// workspace's share is bounded by QueueSize events and QueueBytes bytes,
// all of them together by MaxQueueBytes, and next takes the workspaces in
// turn. One workspace's flood therefore fills only its own share, and
// another workspace's event waits behind at most one event of each other
// workspace, however many that one has queued.
type fairQueue struct {
	mu     sync.Mutex
	byWS   map[string]*wsQueue
	turn   []string // workspaces with events waiting, in turn order
	bytes  int
	events int
	ready  chan struct{} // holds a token while events may be waiting
}

type wsQueue struct {
	events []api.Event
	bytes  int
}

func newFairQueue() *fairQueue {
	return &fairQueue{byWS: make(map[string]*wsQueue), ready: make(chan struct{}, 1)}
}

// push queues e unless its workspace's share, or the whole queue, is full.
func (q *fairQueue) push(e api.Event) bool {
	size := events.Size(e)
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.byWS[e.Workspace]
	switch {
	case w != nil && (len(w.events) >= QueueSize || w.bytes+size > QueueBytes):
		return false
	case q.bytes+size > MaxQueueBytes:
		return false
	case w == nil:
		w = &wsQueue{}
		q.byWS[e.Workspace] = w
		q.turn = append(q.turn, e.Workspace)
	}
	w.events = append(w.events, e)
	w.bytes += size
	q.bytes += size
	q.events++
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// next waits for an event and takes the oldest of the workspace whose
// turn it is; false when ctx ended first.
func (q *fairQueue) next(ctx context.Context) (api.Event, bool) {
	for {
		if e, ok := q.take(); ok {
			return e, true
		}
		select {
		case <-ctx.Done():
			return api.Event{}, false
		case <-q.ready:
		}
	}
}

func (q *fairQueue) take() (api.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.turn) == 0 {
		return api.Event{}, false
	}
	ws := q.turn[0]
	q.turn = q.turn[1:]
	w := q.byWS[ws]
	e := w.events[0]
	w.events[0] = api.Event{}
	w.events = w.events[1:]
	size := events.Size(e)
	w.bytes -= size
	q.bytes -= size
	q.events--
	if len(w.events) > 0 {
		q.turn = append(q.turn, ws) // its next event waits for the others' turns
	} else {
		delete(q.byWS, ws)
	}
	return e, true
}

// len is how many events wait.
func (q *fairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.events
}
