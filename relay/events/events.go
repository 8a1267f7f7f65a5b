// Package events carries a relay node's status events: a bus that numbers
// them, keeps the newest for Last-Event-ID resume (bounded by count and by
// bytes) and fans them out to subscribers and webhook queues without ever
// waiting for a reader, and the server-sent event stream that writes them
// to a client.
//
// It does not decide what is an event: status transitions are computed by
// package status and published here.
package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/relay/api"
)

const (
	// RingSize is how many events are kept for Last-Event-ID resume.
	RingSize = 10_000
	// RingBytes bounds the events kept for resume by their size (Size),
	// whatever their number.
	RingBytes = 4 << 20
	// SubscriberBuffer is how far a stream may fall behind before it is
	// dropped with an overflow notice.
	SubscriberBuffer = 256
)

// Bus keeps the newest events for replay and fans them out. On a single
// node it numbers them itself (Publish); in a cluster the shared store
// numbers them and every node's bus receives them in id order (Deliver),
// with History to resume further back than the ring. No publisher ever
// waits for a reader.
type Bus struct {
	mu       sync.Mutex
	next     uint64      // id Publish gives the next event
	newest   uint64      // id of the newest event kept
	ring     []api.Event // the newest events, oldest first
	ids      []uint64    // ids of ring, in the same places
	size     int         // most events kept
	maxBytes int         // most bytes kept (Size of each)
	bytes    int         // bytes kept now
	subs     map[*Subscriber]struct{}
	sinks    []func(api.Event) // webhook queues; each returns at once
	history  History           // nil on a single node
	done     chan struct{}     // closed on shutdown: streams end
	shut     bool
}

// History reads the events kept after an id, up to limit of them, and
// the oldest id kept (0 when none is).
type History func(ctx context.Context, after uint64, limit int) ([]api.Event, uint64, error)

// historyLimit bounds one resume read from History.
const historyLimit = RingSize

// Subscriber is one event stream: C delivers its events, Dropped is closed
// when it fell too far behind and was let go.
type Subscriber struct {
	match   func(api.Event) bool
	ch      chan api.Event
	dropped chan struct{}
}

// C delivers the subscriber's events.
func (s *Subscriber) C() <-chan api.Event { return s.ch }

// Dropped is closed when the stream fell too far behind.
func (s *Subscriber) Dropped() <-chan struct{} { return s.dropped }

// NewBus numbers events from firstID. The node passes the wall clock in
// microseconds, so ids keep increasing across restarts and a client
// resuming with an id of a previous process gets a reset, not silence.
func NewBus(size int, firstID uint64) *Bus {
	return &Bus{
		next:     firstID,
		newest:   firstID - 1,
		size:     size,
		maxBytes: RingBytes,
		subs:     make(map[*Subscriber]struct{}),
		done:     make(chan struct{}),
	}
}

// StartAt makes newest the id the bus starts after, for a bus whose ids
// come from a shared log (Deliver); set before serving.
func (b *Bus) StartAt(newest uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next, b.newest = newest+1, newest
}

// SetHistory lets streams resume from the store; set before serving.
func (b *Bus) SetHistory(h History) { b.history = h }

// Publish numbers e, keeps it and offers it to every subscriber and sink.
// A subscriber whose buffer is full is dropped, never waited for.
func (b *Bus) Publish(e api.Event) api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.ID = strconv.FormatUint(b.next, 10)
	b.next++
	b.keep(b.next-1, e)
	return e
}

// Deliver keeps an event numbered elsewhere and offers it like Publish.
// Events must arrive in id order; an id not above the newest is dropped.
func (b *Bus) Deliver(e api.Event) {
	id, err := strconv.ParseUint(e.ID, 10, 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil || id <= b.newest {
		return
	}
	b.next = id + 1
	b.keep(id, e)
}

// keep stores e as id and fans it out. The caller holds b.mu.
func (b *Bus) keep(id uint64, e api.Event) {
	b.newest = id
	b.ring, b.ids = append(b.ring, e), append(b.ids, id)
	b.bytes += Size(e)
	for len(b.ring) > 1 && (len(b.ring) > b.size || b.bytes > b.maxBytes) {
		b.bytes -= Size(b.ring[0])
		b.ring[0] = api.Event{} // the array keeps no evicted event alive
		b.ring, b.ids = b.ring[1:], b.ids[1:]
	}
	for sub := range b.subs {
		if !sub.match(e) {
			continue
		}
		select {
		case sub.ch <- e:
		default:
			delete(b.subs, sub)
			close(sub.dropped)
		}
	}
	for _, sink := range b.sinks {
		sink(e)
	}
}

// ErrResumeGap means a Last-Event-ID that the ring cannot continue from.
var ErrResumeGap = errors.New("events after this id are no longer kept")

// Subscribe registers a stream of the events match accepts. With a
// non-empty lastID it also returns the kept events after it: from the
// ring, under the same lock as the registration, or from History when the
// ring does not reach back; either way nothing is missed or sent twice.
// ErrResumeGap comes with a registered subscriber: the stream goes on,
// but the client must re-read status first. The returned id is the newest
// event's at the moment of subscribing.
func (b *Bus) Subscribe(ctx context.Context, match func(api.Event) bool, lastID string) (*Subscriber, []api.Event, string, error) {
	b.mu.Lock()
	sub := &Subscriber{match: match, ch: make(chan api.Event, SubscriberBuffer), dropped: make(chan struct{})}
	if b.shut {
		b.mu.Unlock()
		return sub, nil, "", nil // b.done is closed: the stream ends at once
	}
	b.subs[sub] = struct{}{}
	newest := b.newest
	if lastID == "" {
		b.mu.Unlock()
		return sub, nil, strconv.FormatUint(newest, 10), nil
	}
	last, err := strconv.ParseUint(lastID, 10, 64)
	replay, covered := b.fromRing(last, match)
	b.mu.Unlock()
	switch {
	case err != nil || last > newest:
		return sub, nil, strconv.FormatUint(newest, 10), ErrResumeGap
	case covered:
		return sub, replay, strconv.FormatUint(newest, 10), nil
	}
	replay, err = b.fromHistory(ctx, last, newest, match)
	return sub, replay, strconv.FormatUint(newest, 10), err
}

// fromRing returns the kept events after last, and whether the ring
// reaches back that far. The caller holds b.mu.
func (b *Bus) fromRing(last uint64, match func(api.Event) bool) ([]api.Event, bool) {
	if len(b.ring) == 0 {
		return nil, last == b.newest
	}
	if last+1 < b.ids[0] {
		return nil, false
	}
	var out []api.Event
	for i, e := range b.ring {
		if b.ids[i] > last && match(e) {
			out = append(out, e)
		}
	}
	return out, true
}

// fromHistory reads the events after last up to newest from History.
func (b *Bus) fromHistory(ctx context.Context, last, newest uint64, match func(api.Event) bool) ([]api.Event, error) {
	if b.history == nil {
		return nil, ErrResumeGap
	}
	evs, first, err := b.history(ctx, last, historyLimit)
	if err != nil || first == 0 || last+1 < first {
		return nil, ErrResumeGap
	}
	var out []api.Event
	for _, e := range evs {
		id, _ := strconv.ParseUint(e.ID, 10, 64)
		if id > newest {
			break // the subscriber receives these live
		}
		if match(e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Unsubscribe ends a stream's registration.
func (b *Bus) Unsubscribe(sub *Subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, sub)
}

// AddSink registers a webhook queue. Sinks are added before the node
// serves, so publish needs no more than the bus lock.
func (b *Bus) AddSink(fn func(api.Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sinks = append(b.sinks, fn)
}

// Shutdown ends every stream. It is idempotent.
func (b *Bus) Shutdown() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.shut {
		b.shut = true
		close(b.done)
	}
}

// Done is closed by Shutdown: every stream ends.
func (b *Bus) Done() <-chan struct{} { return b.done }

// Kept returns the events kept for resuming, oldest first.
func (b *Bus) Kept() []api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]api.Event(nil), b.ring...)
}

// eventOverhead is what an event costs beyond its strings: the struct,
// its time and its id.
const eventOverhead = 128

// Size is what an event costs to keep, counted for the ring's and the
// webhook queues' byte bounds.
func Size(e api.Event) int {
	return eventOverhead + len(e.ID) + len(e.Type) + len(e.ConnectionID) + len(e.Workspace) +
		len(e.From) + len(e.To) + len(e.Reason) + len(e.ProviderErrorCode) + len(e.Node)
}

// sseWriteTimeout bounds one write to an event stream: a client that
// stops reading is let go instead of holding a goroutine forever.
const sseWriteTimeout = 30 * time.Second

// NewStream starts a server-sent event stream on w: the headers and 200.
func NewStream(w http.ResponseWriter) *Stream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // reverse proxies: do not hold events back
	w.WriteHeader(http.StatusOK)
	return &Stream{w: w, rc: http.NewResponseController(w)}
}

// Stream writes server-sent events, one flush per event.
type Stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
}

// Send writes one event; an empty id leaves the client's last id as is.
// The JSON of an event holds no newline, so it is one data line.
func (st *Stream) Send(id string, e api.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	st.buf.Reset()
	if id != "" {
		st.buf.WriteString("id: " + id + "\n")
	}
	st.buf.WriteString("event: " + e.Type + "\n")
	st.buf.WriteString("data: ")
	st.buf.Write(data)
	st.buf.WriteString("\n\n")
	return st.flush()
}

// Comment writes a comment line (a keepalive).
func (st *Stream) Comment(text string) error {
	st.buf.Reset()
	st.buf.WriteString(": " + text + "\n\n")
	return st.flush()
}

func (st *Stream) flush() error {
	_ = st.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := st.w.Write(st.buf.Bytes()); err != nil {
		return err
	}
	return st.rc.Flush()
}
