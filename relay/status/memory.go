package status

import (
	"context"
	"sync"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/store"
)

// memoryBook is the Book of a single node: every session is local, and
// failures and published states live in this process.
type memoryBook struct {
	views  func(connID string) []View
	bus    *events.Bus
	record func(api.Event)

	// mu serializes every recomputation, so events of one connection
	// leave in the order their causes happened.
	mu       sync.Mutex
	conns    map[string]*watched
	failures map[string]store.Failure
}

// watched is what the node last published for one connection, the store
// row its status is computed from, and its newest tunnel events.
type watched struct {
	conn   store.Connection
	state  store.PublishedState
	recent []api.Event
}

// NewMemoryBook keeps a single node's book; views lists the live sessions
// of a connection, bus receives the events to announce, and record every
// transition for the history (suppressed ones too), in order. record must
// not block: it is called under the book's lock.
func NewMemoryBook(views func(connID string) []View, bus *events.Bus, record func(api.Event)) Book {
	if record == nil {
		record = func(api.Event) {}
	}
	return &memoryBook{views: views, bus: bus, record: record, conns: map[string]*watched{}, failures: map[string]store.Failure{}}
}

func (b *memoryBook) Views(_ context.Context, connID string) ([]View, error) {
	return b.views(connID), nil
}

func (b *memoryBook) Failure(_ context.Context, connID string) (store.Failure, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures[connID], nil
}

func (b *memoryBook) NoteFailure(_ context.Context, connID, msg string, at time.Time, within time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.failures[connID]
	if at.Sub(f.At) >= within {
		f.Count = 0
	}
	if f.At.After(at) { // refusals noted out of order keep the newest time
		at = f.At
	}
	b.failures[connID] = store.Failure{At: at, Count: f.Count + 1, Message: msg}
	return nil
}

func (b *memoryBook) Track(_ context.Context, c store.Connection, j Judge) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.track(c, j)
	return nil
}

// track returns c's entry, made from the status now if it is new. The
// caller holds b.mu.
func (b *memoryBook) track(c store.Connection, j Judge) *watched {
	if w := b.conns[c.ID]; w != nil {
		w.conn = mergeRow(w.conn, c)
		return w
	}
	st := j.Status(c, b.views(c.ID), b.failures[c.ID])
	w := &watched{conn: c, state: StateOf(st)}
	b.conns[c.ID] = w
	return w
}

// mergeRow folds a newer read of a connection's row into the one kept:
// revocation and a first connection never go back, whatever order two
// concurrent reads arrive in.
func mergeRow(kept, fresh store.Connection) store.Connection {
	if fresh.RevokedAt == nil {
		fresh.RevokedAt = kept.RevokedAt
	}
	if fresh.FirstConnectedAt == nil {
		fresh.FirstConnectedAt = kept.FirstConnectedAt
	}
	return fresh
}

// Publish compares the status now with what was published last. An
// untracked connection with a fresh row starts being tracked from the
// status that row gives, without an event.
func (b *memoryBook) Publish(_ context.Context, connID string, fresh *store.Connection, j Judge) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.conns[connID]
	switch {
	case fresh != nil:
		w = b.track(*fresh, j)
	case w == nil:
		return nil
	}
	views := b.views(connID)
	if w.conn.FirstConnectedAt == nil && len(views) > 0 {
		// The row was read before this node's first tunnel of the
		// connection was stored; a live session settles it.
		at := views[0].ConnectedAt
		w.conn.FirstConnectedAt = &at
	}
	st := j.Status(w.conn, views, b.failures[connID])
	next, evs := j.Next(w.conn, w.state, st, w.recent)
	for _, e := range evs {
		if !e.Suppressed {
			e = b.bus.Publish(e)
		}
		b.record(e)
		if e.Type == api.EventTunnel {
			w.recent = append(w.recent, e)
		}
	}
	if n := len(w.recent) - store.RecentTunnelEvents; n > 0 {
		w.recent = append([]api.Event(nil), w.recent[n:]...)
	}
	w.state = next
	return nil
}

func (b *memoryBook) Published(connID string) (store.PublishedState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.conns[connID]; w != nil {
		return w.state, true
	}
	return store.PublishedState{}, false
}

func (b *memoryBook) Tracked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for id, w := range b.conns {
		if w.state.Tunnel == TunnelConnected || w.state.Tunnel == TunnelDegraded || w.state.Auth == AuthFailing || w.state.Flapping {
			out = append(out, id)
		}
	}
	return out
}

func (b *memoryBook) Forget(connID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, connID)
	delete(b.failures, connID)
}
