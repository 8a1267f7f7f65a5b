package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// failureWriteEvery and failureWritesPer throttle the writes of refused
// agent tokens: a flood of wrong tokens for one connection costs two
// writes per second per node, not one per attempt. Two, because auth turns
// failing at the second refusal, which must not be the one dropped (an
// agent's tunnels are refused together).
const (
	failureWriteEvery = time.Second
	failureWritesPer  = 2
)

// failureWrites counts the refused-token writes of one connection since
// at.
type failureWrites struct {
	at time.Time
	n  int
}

// Book is the status book of a cluster: sessions on every node, refused
// tokens and published states in the shared store, each transition
// published once with a cluster-ordered id, and delivered back to every
// node's event bus.
type Book struct {
	node  *Node
	hooks Receivers

	mu        sync.Mutex
	published map[string]store.PublishedState // as far as this node knows
	failures  map[string]failureWrites        // writes of refused tokens, per connection
	lapsed    map[string]bool                 // connections whose sessions lapsed
	delivered int64                           // newest event id handed to the bus
	wake      chan struct{}                   // an event was published somewhere
}

// NewBook returns the node's status book.
func (n *Node) NewBook() *Book {
	n.book = &Book{
		node:      n,
		published: map[string]store.PublishedState{}, failures: map[string]failureWrites{},
		lapsed: map[string]bool{}, wake: make(chan struct{}, 1),
	}
	return n.book
}

var _ status.Book = (*Book)(nil)

// Views lists a connection's sessions on every node; this node's own come
// from its live sessions, fresher than their rows.
func (b *Book) Views(ctx context.Context, connID string) ([]status.View, error) {
	ps, err := b.node.st.PresenceOf(ctx, connID, time.Now())
	if err != nil {
		return nil, err
	}
	return b.merge(connID, ps), nil
}

func (b *Book) merge(connID string, ps []store.Presence) []status.View {
	views := b.node.local(connID)
	for _, p := range ps {
		if p.NodeID == b.node.cfg.NodeID {
			continue
		}
		if v, err := decodeView(p.View); err == nil {
			v.Draining = v.Draining || p.Draining
			views = append(views, v)
		}
	}
	return views
}

// Failure is the connection's last refused agent token, cluster-wide.
func (b *Book) Failure(ctx context.Context, connID string) (store.Failure, error) {
	return b.node.st.LastFailure(ctx, connID)
}

// NoteFailure records a refused agent token, at most failureWritesPer
// times per failureWriteEvery per connection from this node.
func (b *Book) NoteFailure(ctx context.Context, connID, msg string, at time.Time, within time.Duration) error {
	b.mu.Lock()
	w := b.failures[connID]
	if at.Sub(w.at) >= failureWriteEvery {
		w = failureWrites{at: at}
	}
	write := w.n < failureWritesPer
	if write {
		w.n++
		b.failures[connID] = w
	}
	b.mu.Unlock()
	if !write {
		return nil
	}
	return b.node.st.NoteFailure(ctx, connID, msg, at, within)
}

// Track records the connection's status now as published, without an
// event, unless the cluster already published one.
func (b *Book) Track(ctx context.Context, c store.Connection, j status.Judge) error {
	return b.publish(ctx, c.ID, true, j)
}

// Publish recomputes the connection's status from the cluster's truth,
// under the cluster-wide lock of the connection, and publishes what
// changed since the last publication anywhere.
func (b *Book) Publish(ctx context.Context, connID string, fresh *store.Connection, j status.Judge) error {
	return b.publish(ctx, connID, fresh != nil, j)
}

func (b *Book) publish(ctx context.Context, connID string, track bool, j status.Judge) error {
	var next store.PublishedState
	_, err := b.node.st.Publish(ctx, connID, j.Now, func(snap store.Snapshot) (store.PublishedState, []store.EventRecord, error) {
		if !snap.Known && !track {
			return store.PublishedState{}, nil, nil
		}
		st := j.Status(snap.Connection, b.merge(connID, snap.Presence), snap.Failure)
		next = status.StateOf(st)
		if !snap.Known {
			return next, nil, nil
		}
		var evs []api.Event
		next, evs = j.Next(snap.Connection, snap.Prev, st, decodeEvents(snap.Recent))
		recs, err := b.records(snap.Connection, evs)
		return next, recs, err
	})
	if err != nil {
		return err
	}
	if next != (store.PublishedState{}) {
		b.mu.Lock()
		b.published[connID] = next
		b.mu.Unlock()
	}
	return nil
}

// records encodes events for the store, with the webhooks owed each (a
// suppressed event is history only: no webhook is owed it).
func (b *Book) records(c store.Connection, evs []api.Event) ([]store.EventRecord, error) {
	out := make([]store.EventRecord, 0, len(evs))
	for _, e := range evs {
		body, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		rec := store.EventRecord{ConnectionID: c.ID, Workspace: c.Workspace, At: e.Time, Body: body}
		if !e.Suppressed {
			rec.Receivers = b.hooks.For(c.Workspace)
		}
		out = append(out, rec)
	}
	return out, nil
}

// decodeEvents decodes stored events, skipping any that do not decode.
func decodeEvents(recs []store.EventRecord) []api.Event {
	out := make([]api.Event, 0, len(recs))
	for _, rec := range recs {
		if e, err := decodeEvent(rec); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// Published is the state last published for a connection, as this node
// knows it from its own publications and the events it received.
func (b *Book) Published(connID string) (store.PublishedState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.published[connID]
	return st, ok
}

// Tracked lists the connections this node rechecks on the clock: those
// with a tunnel here (a Health may be overdue), those it recorded a
// refused token for lately (the failure ages out), and those whose
// sessions lapsed (their node died).
func (b *Book) Tracked() []string {
	seen := map[string]bool{}
	for _, s := range b.node.b.All() {
		seen[s.ConnectionID] = true
	}
	b.mu.Lock()
	for id, w := range b.failures {
		if time.Since(w.at) < time.Hour {
			seen[id] = true
		} else {
			delete(b.failures, id)
		}
	}
	for id := range b.lapsed {
		seen[id] = true
		delete(b.lapsed, id)
	}
	for id, st := range b.published {
		if st.Flapping { // settles on the clock, tunnel or not
			seen[id] = true
		}
	}
	b.mu.Unlock()
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	return out
}

// Forget drops what this node keeps of a deleted connection. Another
// node keeps the state it learned from the connection's events until it
// restarts: a few words, and the connection publishes nothing more.
func (b *Book) Forget(connID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.published, connID)
	delete(b.failures, connID)
	delete(b.lapsed, connID)
}

// expired marks a connection whose sessions' leases lapsed for the next
// recheck.
func (b *Book) expired(connID string) {
	b.mu.Lock()
	b.lapsed[connID] = true
	b.mu.Unlock()
}

// woken tells the events loop that an event was published.
func (b *Book) woken() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// eventsCatchUp is how often the bus looks for events without a wake-up,
// in case a notification was lost with a database connection.
const eventsCatchUp = 2 * time.Second

// startEvents makes the bus number its events as the cluster does and
// start after the newest one: live subscribers start from now, and a
// resume reads older events from the store.
func (b *Book) startEvents(ctx context.Context) error {
	newest, err := b.node.st.NewestEvent(ctx)
	if err != nil {
		return err
	}
	b.delivered = newest
	b.node.bus.StartAt(uint64(newest))
	return nil
}

// eventsLoop hands every event published in the cluster to this node's
// bus, in id order.
func (b *Book) eventsLoop(ctx context.Context) {
	t := time.NewTicker(eventsCatchUp)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-t.C:
		}
		b.deliverNew(ctx)
	}
}

func (b *Book) deliverNew(ctx context.Context) {
	for {
		evs, _, err := b.node.st.EventsAfter(ctx, b.delivered, 500)
		if err != nil || len(evs) == 0 {
			return
		}
		for _, rec := range evs {
			e, err := decodeEvent(rec)
			b.delivered = rec.ID
			if err != nil {
				continue
			}
			b.learn(e)
			if !e.Suppressed { // history only
				b.node.bus.Deliver(e)
			}
		}
	}
}

// learn updates the published state this node knows from an event.
func (b *Book) learn(e api.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.published[e.ConnectionID]
	switch {
	case e.Type == api.EventTunnel && e.To == status.TunnelFlapping:
		st.Flapping = true
	case e.Type == api.EventTunnel && e.From == status.TunnelFlapping:
		st.Flapping, st.Tunnel = false, e.To
	case e.Type == api.EventTunnel:
		st.Tunnel = e.To
	case e.Type == api.EventAuth:
		st.Auth = e.To
	case e.Type == api.EventAllowlist:
		st.Allowlist = e.To
	case e.Type == api.EventWarning && e.To == api.WarningDuplicateAgent:
		st.Duplicate = true
	case e.Type == api.EventWarning && e.From == api.WarningDuplicateAgent:
		st.Duplicate = false
	}
	b.published[e.ConnectionID] = st
}

func decodeEvent(rec store.EventRecord) (api.Event, error) {
	var e api.Event
	if err := json.Unmarshal(rec.Body, &e); err != nil {
		return api.Event{}, err
	}
	e.ID = formatID(rec.ID)
	return e, nil
}

func formatID(id int64) string { return strconv.FormatInt(id, 10) }

// History reads kept events after id for a stream resuming further back
// than the bus remembers; first is the oldest id kept.
func (b *Book) History(ctx context.Context, after uint64, limit int) ([]api.Event, uint64, error) {
	recs, first, err := b.node.st.EventsAfter(ctx, int64(after), limit)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Event, 0, len(recs))
	for _, e := range decodeEvents(recs) {
		if !e.Suppressed {
			out = append(out, e)
		}
	}
	return out, uint64(first), nil
}
