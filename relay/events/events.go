// Package events carries a relay node's status events: a bus that numbers
// them, keeps the newest for Last-Event-ID resume and fans them out to
// subscribers and webhook queues without ever waiting for a reader, and the
// server-sent event stream that writes them to a client.
//
// It does not decide what is an event: status transitions are computed by
// package status and published here.
package events

import (
	"bytes"
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
	// SubscriberBuffer is how far a stream may fall behind before it is
	// dropped with an overflow notice.
	SubscriberBuffer = 256
)

// Bus numbers events, keeps the newest for replay and fans them out. No
// publisher ever waits for a reader.
type Bus struct {
	mu    sync.Mutex
	next  uint64      // id of the next event
	ring  []api.Event // the newest events; ring[head] is the oldest once full
	head  int
	size  int
	subs  map[*Subscriber]struct{}
	sinks []func(api.Event) // webhook queues; each returns at once
	done  chan struct{}     // closed on shutdown: streams end
	shut  bool
}

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
		next: firstID,
		size: size,
		subs: make(map[*Subscriber]struct{}),
		done: make(chan struct{}),
	}
}

// Publish numbers e, keeps it and offers it to every subscriber and sink.
// A subscriber whose buffer is full is dropped, never waited for.
func (b *Bus) Publish(e api.Event) api.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.ID = strconv.FormatUint(b.next, 10)
	b.next++
	if len(b.ring) < b.size {
		b.ring = append(b.ring, e)
	} else {
		b.ring[b.head] = e
		b.head = (b.head + 1) % b.size
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
	return e
}

// ErrResumeGap means a Last-Event-ID that the ring cannot continue from.
var ErrResumeGap = errors.New("events after this id are no longer kept")

// Subscribe registers a stream of the events match accepts. With a
// non-empty lastID it also returns the kept events after it; the replay
// and the registration happen under one lock, so nothing is missed or
// sent twice. ErrResumeGap comes with a registered subscriber: the
// stream goes on, but the client must re-read status first. The returned
// id is the newest event's at the moment of subscribing.
func (b *Bus) Subscribe(match func(api.Event) bool, lastID string) (*Subscriber, []api.Event, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sub := &Subscriber{match: match, ch: make(chan api.Event, SubscriberBuffer), dropped: make(chan struct{})}
	if b.shut {
		return sub, nil, "", nil // b.done is closed: the stream ends at once
	}
	b.subs[sub] = struct{}{}
	newest := strconv.FormatUint(b.next-1, 10)
	if lastID == "" {
		return sub, nil, newest, nil
	}
	last, err := strconv.ParseUint(lastID, 10, 64)
	first := b.next - uint64(len(b.ring))
	if err != nil || last+1 < first || last >= b.next {
		return sub, nil, newest, ErrResumeGap
	}
	var replay []api.Event
	for i := int(last + 1 - first); i < len(b.ring); i++ {
		if e := b.ring[(b.head+i)%len(b.ring)]; match(e) {
			replay = append(replay, e)
		}
	}
	return sub, replay, newest, nil
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
	out := make([]api.Event, 0, len(b.ring))
	for i := range b.ring {
		out = append(out, b.ring[(b.head+i)%len(b.ring)])
	}
	return out
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
