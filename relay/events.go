package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Status events. The node remembers, per connection, the tunnel, auth and
// allowlist status it last published and recomputes them with status()
// whenever something that feeds them happens: a tunnel registered or
// removed, an agent token refused, a revocation, an agent reporting a
// different allowlist, and the passing of time (a Health overdue, an auth
// failure ageing out of AuthFailureWindow). Only real changes become
// events. Events go to an in-memory bus that keeps the newest ones for
// resuming streams, fans them out to GET /v1/events subscribers and hands
// them to webhooks; no publisher ever waits for a reader.

const (
	// eventRingSize is how many events are kept for Last-Event-ID resume.
	eventRingSize = 10_000
	// subscriberBuffer is how far a stream may fall behind before it is
	// dropped with an overflow notice.
	subscriberBuffer = 256
)

// eventBus numbers events, keeps the newest for replay and fans them out.
type eventBus struct {
	mu    sync.Mutex
	next  uint64      // id of the next event
	ring  []api.Event // the newest events; ring[head] is the oldest once full
	head  int
	size  int
	subs  map[*subscriber]struct{}
	sinks []func(api.Event) // webhook queues; each returns at once
	done  chan struct{}     // closed on shutdown: streams end
	shut  bool
}

// subscriber is one event stream.
type subscriber struct {
	match   func(api.Event) bool
	ch      chan api.Event
	dropped chan struct{} // closed when the stream fell too far behind
}

// newEventBus numbers events from firstID. The node passes the wall clock
// in microseconds, so ids keep increasing across restarts and a client
// resuming with an id of a previous process gets a reset, not silence.
func newEventBus(size int, firstID uint64) *eventBus {
	return &eventBus{
		next: firstID,
		size: size,
		subs: make(map[*subscriber]struct{}),
		done: make(chan struct{}),
	}
}

// publish numbers e, keeps it and offers it to every subscriber and sink.
// A subscriber whose buffer is full is dropped, never waited for.
func (b *eventBus) publish(e api.Event) api.Event {
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

// errResumeGap means a Last-Event-ID that the ring cannot continue from.
var errResumeGap = errors.New("events after this id are no longer kept")

// subscribe registers a stream of the events match accepts. With a
// non-empty lastID it also returns the kept events after it; the replay
// and the registration happen under one lock, so nothing is missed or
// sent twice. errResumeGap comes with a registered subscriber: the
// stream goes on, but the client must re-read status first. The returned
// id is the newest event's at the moment of subscribing.
func (b *eventBus) subscribe(match func(api.Event) bool, lastID string) (*subscriber, []api.Event, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sub := &subscriber{match: match, ch: make(chan api.Event, subscriberBuffer), dropped: make(chan struct{})}
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
		return sub, nil, newest, errResumeGap
	}
	var replay []api.Event
	for i := int(last + 1 - first); i < len(b.ring); i++ {
		if e := b.ring[(b.head+i)%len(b.ring)]; match(e) {
			replay = append(replay, e)
		}
	}
	return sub, replay, newest, nil
}

func (b *eventBus) unsubscribe(sub *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, sub)
}

// addSink registers a webhook queue. Sinks are added before the node
// serves, so publish needs no more than the bus lock.
func (b *eventBus) addSink(fn func(api.Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sinks = append(b.sinks, fn)
}

// shutdown ends every stream. It is idempotent.
func (b *eventBus) shutdown() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.shut {
		b.shut = true
		close(b.done)
	}
}

// watched is what the node last published for one connection, and the
// store row its status is computed from.
type watched struct {
	conn      store.Connection
	tunnel    string
	auth      string
	allowlist string
}

// statusWatch holds the per-connection state. Its lock serializes every
// recomputation, so events of one connection leave in the order their
// causes happened.
type statusWatch struct {
	mu    sync.Mutex
	conns map[string]*watched
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

// watchConnection starts tracking a connection from the row given, before
// a change to it is made, so that the change has a "from". A connection
// already tracked only takes the row's news.
func (s *Server) watchConnection(c store.Connection) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	s.watchLocked(c, time.Now())
}

func (s *Server) watchLocked(c store.Connection, now time.Time) *watched {
	if s.watch.conns == nil {
		s.watch.conns = make(map[string]*watched)
	}
	if w := s.watch.conns[c.ID]; w != nil {
		w.conn = mergeRow(w.conn, c)
		return w
	}
	st := s.status(c, nil, now)
	w := &watched{conn: c, tunnel: st.TunnelStatus, auth: st.AuthStatus, allowlist: st.AllowlistStatus}
	s.watch.conns[c.ID] = w
	return w
}

// statusChanged recomputes a tracked connection's status and publishes
// what changed.
func (s *Server) statusChanged(connID string) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	if w := s.watch.conns[connID]; w != nil {
		s.publishChanges(w, time.Now())
	}
}

// connectionRevoked publishes the transitions of a revocation; c is the
// row the store returned after revoking.
func (s *Server) connectionRevoked(c store.Connection) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	now := time.Now()
	s.publishChanges(s.watchLocked(c, now), now)
}

// noteAuthFailure records a refused agent token against its connection
// and publishes auth failing when that is news.
func (s *Server) noteAuthFailure(ctx context.Context, connID, msg string, at time.Time) {
	s.watch.mu.Lock()
	known := s.watch.conns[connID] != nil
	s.watch.mu.Unlock()
	if !known {
		c, err := s.store.GetConnection(ctx, connID)
		if err != nil {
			s.log.Warn("status events: look up connection", "connection", connID, "err", err)
		} else {
			s.watchConnection(c)
		}
	}
	s.reg.recordAuthFailure(connID, msg, at)
	s.statusChanged(connID)
}

// healthReported recomputes status after a Health when the agent's
// allowlist changed, or when the tunnel was degraded and a Health may be
// what it was waiting for.
func (s *Server) healthReported(connID string, prev, next string) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	w := s.watch.conns[connID]
	if w != nil && (prev != next || w.tunnel == tunnelDegraded) {
		s.publishChanges(w, time.Now())
	}
}

// publishChanges compares the status now with what was published last.
// The caller holds s.watch.mu.
func (s *Server) publishChanges(w *watched, now time.Time) {
	if w.conn.FirstConnectedAt == nil {
		// The row was read before this node's first tunnel of the
		// connection was stored; a live session settles it.
		for _, sess := range s.reg.sessions(w.conn.ID) {
			at := sess.connectedAt
			w.conn.FirstConnectedAt = &at
			break
		}
	}
	st := s.status(w.conn, nil, now)
	changes := []struct {
		typ      string
		kept     *string
		from, to string
	}{
		{api.EventTunnel, &w.tunnel, w.tunnel, st.TunnelStatus},
		{api.EventAuth, &w.auth, w.auth, st.AuthStatus},
		{api.EventAllowlist, &w.allowlist, w.allowlist, st.AllowlistStatus},
	}
	for _, ch := range changes {
		if ch.from == ch.to {
			continue
		}
		*ch.kept = ch.to
		e := s.events.publish(api.Event{
			Type:              ch.typ,
			ConnectionID:      w.conn.ID,
			Workspace:         w.conn.Workspace,
			Time:              now.UTC(),
			From:              ch.from,
			To:                ch.to,
			Reason:            st.Reason,
			ProviderErrorCode: st.ProviderErrorCode,
		})
		s.log.Debug("status event", "id", e.ID, "type", e.Type, "connection", e.ConnectionID,
			"from", e.From, "to", e.To, "reason", e.Reason)
	}
}

// recheckAll publishes the transitions that only the clock causes: a
// tunnel whose Health is overdue turns degraded, an auth failure older
// than AuthFailureWindow stops counting.
func (s *Server) recheckAll(now time.Time) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	for _, w := range s.watch.conns {
		if w.tunnel == tunnelConnected || w.tunnel == tunnelDegraded || w.auth == authFailing {
			s.publishChanges(w, now)
		}
	}
}

// statusClock runs recheckAll until ctx ends.
func (s *Server) statusClock(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.recheckAll(now)
		}
	}
}

// statusClockPeriod is fine enough to notice an overdue Health or an
// expired auth failure well within one heartbeat, and coarse enough to
// cost nothing.
func statusClockPeriod(cfg Config) time.Duration {
	p := min(cfg.HeartbeatInterval, cfg.AuthFailureWindow) / 4
	return min(max(p, 50*time.Millisecond), time.Second)
}

// startEvents sets up the bus, the webhooks and the status clock; the
// goroutines stop when s.ctx ends and stopEvents waits for them.
func (s *Server) startEvents() {
	s.events = newEventBus(eventRingSize, uint64(time.Now().UnixMicro()))
	for _, cfg := range s.cfg.Webhooks {
		h := newWebhook(cfg, s.webhookClient, s.log, s.cfg.Version)
		s.webhooks = append(s.webhooks, h)
		s.events.addSink(h.offer)
		s.background.Go(func() { h.run(s.ctx) })
	}
	every := statusClockPeriod(s.cfg)
	s.background.Go(func() { s.statusClock(s.ctx, every) })
}

// stopEvents ends every stream and waits for the clock and the webhook
// deliveries; s.ctx must already be cancelled.
func (s *Server) stopEvents() {
	s.events.shutdown()
	s.background.Wait()
	s.webhookClient.CloseIdleConnections()
}

// sseWriteTimeout bounds one write to an event stream: a client that
// stops reading is let go instead of holding a goroutine forever.
const sseWriteTimeout = 30 * time.Second

// apiEvents streams status events as server-sent events. A workspace key
// sees its workspace's connections only; ?connection_id= narrows the
// stream to one connection the key may see. Last-Event-ID resumes after
// that event, or answers with a reset when it can no longer.
func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	connID := r.URL.Query().Get("connection_id")
	if connID != "" {
		c, err := s.store.GetConnection(r.Context(), connID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && !k.Admin && c.Workspace != k.Workspace) {
			writeError(w, r, apiError{reason: protocol.ConnectionNotFound, msg: fmt.Sprintf("no connection %q", connID)})
			return
		}
		if err != nil {
			s.storeError(w, r, err)
			return
		}
	}
	match := func(e api.Event) bool {
		return (k.Admin || e.Workspace == k.Workspace) && (connID == "" || e.ConnectionID == connID)
	}
	sub, replay, newest, gap := s.events.subscribe(match, r.Header.Get("Last-Event-ID"))
	defer s.events.unsubscribe(sub)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // reverse proxies: do not hold events back
	w.WriteHeader(http.StatusOK)
	st := &sseStream{w: w, rc: http.NewResponseController(w)}
	if err := st.comment("postern events"); err != nil {
		return
	}
	if errors.Is(gap, errResumeGap) {
		if st.send(newest, api.Event{Type: api.EventReset, Time: time.Now().UTC()}) != nil {
			return
		}
	}
	for _, e := range replay {
		if st.send(e.ID, e) != nil {
			return
		}
	}

	keepAlive := time.NewTicker(s.cfg.EventKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.events.done:
			return
		case <-sub.dropped:
			s.log.Info("event stream dropped: client reads too slowly", "key", k.ID, "request_id", requestID(r))
			_ = st.send("", api.Event{Type: api.EventOverflow, Time: time.Now().UTC()})
			return
		case e := <-sub.ch:
			if st.send(e.ID, e) != nil {
				return
			}
		case <-keepAlive.C:
			if !s.keyStillValid(r.Context(), k) || st.comment("keepalive") != nil {
				return
			}
		}
	}
}

// keyStillValid ends the streams of a key revoked after they started.
// A store that does not answer does not end them.
func (s *Server) keyStillValid(ctx context.Context, k store.APIKey) bool {
	cur, err := s.store.GetAPIKey(ctx, k.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	return err != nil || cur.RevokedAt == nil
}

// sseStream writes server-sent events, one flush per event.
type sseStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
}

// send writes one event; an empty id leaves the client's last id as is.
// The JSON of an event holds no newline, so it is one data line.
func (st *sseStream) send(id string, e api.Event) error {
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

func (st *sseStream) comment(text string) error {
	st.buf.Reset()
	st.buf.WriteString(": " + text + "\n\n")
	return st.flush()
}

func (st *sseStream) flush() error {
	_ = st.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := st.w.Write(st.buf.Bytes()); err != nil {
		return err
	}
	return st.rc.Flush()
}
