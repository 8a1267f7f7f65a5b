package relay

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// sseFrame is one server-sent event as it crossed the wire.
type sseFrame struct {
	id, event, data string
	comment         string
}

// eventStream is a GET /v1/events client reading on its own goroutine.
type eventStream struct {
	resp   *http.Response
	frames chan sseFrame // closed when the stream ends
	cancel context.CancelFunc
	done   chan struct{}
	gate   chan struct{} // nil, or closed when reading may start
	stop   chan struct{} // closed by Close
}

// subscribe opens GET /v1/events with key, an optional Last-Event-ID and
// query, and checks the stream's headers.
func (h *harness) subscribe(t *testing.T, key, lastID, query string) *eventStream {
	t.Helper()
	s, r := h.openEvents(t, key, lastID, query)
	require.NotNil(t, s, "status %d: %s", r.status, r.body)
	return s
}

// newWatchedHarness is newConnHarness with the admin following every
// event from the start.
func newWatchedHarness(t *testing.T, ws string, opts ...func(*Config)) (*harness, api.Connection, *eventStream) {
	t.Helper()
	h, c := newConnHarness(t, ws, opts...)
	return h, c, h.subscribe(t, h.adminKey, "", "")
}

// openEvents is subscribe that returns the refusal instead of failing.
func (h *harness) openEvents(t *testing.T, key, lastID, query string) (*eventStream, answer) {
	t.Helper()
	return h.openEventsGated(t, key, lastID, query, nil)
}

// openEventsGated is openEvents whose reader starts only when gate is
// closed: until then the client reads nothing at all.
func (h *harness) openEventsGated(t *testing.T, key, lastID, query string, gate chan struct{}) (*eventStream, answer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.ep.apiURL+"/v1/events"+query, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := h.ep.client.Do(req)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		return nil, do(t, h.ep.client, req.Clone(context.Background()))
	}
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	s := &eventStream{resp: resp, frames: make(chan sseFrame, 64), cancel: cancel, done: make(chan struct{}), gate: gate, stop: make(chan struct{})}
	go s.read()
	t.Cleanup(s.Close)
	return s, answer{}
}

func (s *eventStream) read() {
	defer close(s.done)
	defer close(s.frames)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-s.stop:
			return
		}
	}
	sc := bufio.NewScanner(s.resp.Body)
	var f sseFrame
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			select {
			case s.frames <- f:
			case <-s.stop:
				return
			}
			f = sseFrame{}
		case strings.HasPrefix(line, ":"):
			f.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
}

// Close ends the stream and waits for its reader.
func (s *eventStream) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.cancel()
	_ = s.resp.Body.Close()
	<-s.done
}

// next returns the next event frame, skipping comments.
func (s *eventStream) next(t *testing.T) sseFrame {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case f, ok := <-s.frames:
			require.True(t, ok, "event stream ended")
			if f.event == "" && f.comment != "" {
				continue
			}
			return f
		case <-deadline:
			require.FailNow(t, "no event within "+waitFor.String())
		}
	}
}

// nextDecoded returns the next event frame and the event in its data.
func (s *eventStream) nextDecoded(t *testing.T) (sseFrame, api.Event) {
	t.Helper()
	f := s.next(t)
	var e api.Event
	require.NoError(t, json.Unmarshal([]byte(f.data), &e), f.data)
	return f, e
}

// nextEvent returns the next status event of connID and type typ,
// checking that its id is on the wire and in the body.
func (s *eventStream) nextEvent(t *testing.T, connID, typ string) api.Event {
	t.Helper()
	for {
		f, e := s.nextDecoded(t)
		if e.ConnectionID != connID || e.Type != typ {
			continue
		}
		require.Equal(t, typ, f.event)
		require.Equal(t, f.id, e.ID)
		return e
	}
}

// requireTransition checks one event's fields.
func requireTransition(t *testing.T, e api.Event, from, to string, reason protocol.Reason) {
	t.Helper()
	assert.Equal(t, from, e.From, "from")
	assert.Equal(t, to, e.To, "to")
	assert.Equal(t, reason, e.Reason)
	assert.Equal(t, reason.Info().ProviderErrorCode, e.ProviderErrorCode)
	assert.WithinDuration(t, time.Now(), e.Time, waitFor)
	_, err := strconv.ParseUint(e.ID, 10, 64)
	assert.NoError(t, err, "id %q is a number", e.ID)
}

func TestEventsTunnelLifecycle(t *testing.T) {
	t.Parallel()
	h, c, sub := newWatchedHarness(t, "team-a")

	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	up := sub.nextEvent(t, c.ID, api.EventTunnel)
	requireTransition(t, up, "never_connected", "connected", "")
	assert.Equal(t, "team-a", up.Workspace)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventAllowlist), "unknown", "configured", "")

	a.Close()
	down := sub.nextEvent(t, c.ID, api.EventTunnel)
	requireTransition(t, down, "connected", "disconnected", protocol.AgentOffline)
	assert.Greater(t, mustID(t, down), mustID(t, up), "ids increase")

	// A reconnect starts from disconnected, not from never_connected.
	a = h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "disconnected", "connected", "")
	a.Close()
}

func mustID(t *testing.T, e api.Event) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(e.ID, 10, 64)
	require.NoError(t, err)
	return n
}

func TestEventsAuthFailingAndExpiring(t *testing.T) {
	t.Parallel()
	h, c, sub := newWatchedHarness(t, "", func(c *Config) { c.AuthFailureWindow = time.Second })

	for range 2 { // one refusal proves nothing; two in the window do
		r := h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))
		requireRefusal(t, r, http.StatusUnauthorized, protocol.AgentTokenInvalid)
	}
	failing := sub.nextEvent(t, c.ID, api.EventAuth)
	requireTransition(t, failing, "active", "failing", protocol.AgentAuthFailed)

	// More refusals while failing are no news.
	h.tunnelRequest(t, "Bearer "+wrongSecret(t, c.AgentToken))

	// The clock ends it: no request is needed for failing to age out.
	recovered := sub.nextEvent(t, c.ID, api.EventAuth)
	requireTransition(t, recovered, "failing", "active", protocol.AgentNeverConnected)
	assert.Equal(t, mustID(t, failing)+1, mustID(t, recovered), "no event in between for this stream")
}

func TestEventsRevoke(t *testing.T) {
	t.Parallel()
	h, c, sub := newWatchedHarness(t, "")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventAllowlist), "unknown", "configured", "")

	h.revoke(t, c.ID)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "connected", "revoked", protocol.ConnectionRevoked)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventAuth), "active", "revoked", protocol.ConnectionRevoked)
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventAllowlist), "configured", "unknown", protocol.ConnectionRevoked)
	a.Close()

	// Revoking again and the closed tunnel change nothing more.
	h.revoke(t, c.ID)
	other := h.createConnection(t, "marker", "")
	b := h.connectAgent(t, other.AgentToken, testHello("agent-2", 1), echo)
	defer b.Close()
	_, e := sub.nextDecoded(t)
	assert.Equal(t, other.ID, e.ConnectionID, "the next event is the marker's: %+v", e)
}

func TestEventsAllowlistAndDegraded(t *testing.T) {
	t.Parallel()
	const beat = 100 * time.Millisecond
	h, c := newConnHarness(t, "", func(c *Config) { c.HeartbeatInterval = beat })
	sub := h.subscribe(t, h.adminKey, "", "?connection_id="+c.ID)
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer a.Close()
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "never_connected", "connected", "")

	// No Health for 2.5 beats: degraded, found by the clock alone.
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "connected", "degraded", "")

	bad := testAllowlist()
	bad.Status, bad.SHA256, bad.LastError = "invalid", strings.Repeat("0", 64), "line 3: bad cidr"
	a.SendHealth(t, protocol.Health{Time: time.Now(), TunnelsUp: 1, Allowlist: bad})
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventTunnel), "degraded", "connected", "")
	requireTransition(t, sub.nextEvent(t, c.ID, api.EventAllowlist), "configured", "invalid", "")
}

func TestEventsResume(t *testing.T) {
	t.Parallel()
	h, c, sub := newWatchedHarness(t, "")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	seen := sub.nextEvent(t, c.ID, api.EventTunnel)
	sub.Close()

	// Missed while away: allowlist up (already published), tunnel down,
	// allowlist gone.
	a.Close()
	require.Eventually(t, func() bool { return h.pollStatus(c.ID).AllowlistStatus == "unknown" }, waitFor, pollEvery)
	h.srv.status.Changed(t.Context(), c.ID) // settle: the last transition is published by now

	resumed := h.subscribe(t, h.adminKey, seen.ID, "")
	var got []string
	for range 3 {
		_, e := resumed.nextDecoded(t)
		got = append(got, e.Type+" "+e.From+"->"+e.To)
		assert.Greater(t, mustID(t, e), mustID(t, seen))
	}
	assert.Equal(t, []string{
		"allowlist unknown->configured",
		"tunnel connected->disconnected",
		"allowlist configured->unknown",
	}, got)

	// Nothing more was replayed: the next frame is a new event.
	b := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer b.Close()
	requireTransition(t, resumed.nextEvent(t, c.ID, api.EventTunnel), "disconnected", "connected", "")
}

func TestEventsResetWhenResumeIsImpossible(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	a := h.connectAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	defer a.Close()
	h.waitTunnels(t, c.ID, 1)

	for name, lastID := range map[string]string{
		"older than the ring":         "1",
		"from the future":             strconv.FormatUint(^uint64(0)-1, 10),
		"not a number":                "abc",
		"negative":                    "-5",
		"another process's numbering": "17",
	} {
		t.Run(name, func(t *testing.T) {
			sub := h.subscribe(t, h.adminKey, lastID, "")
			f := sub.next(t)
			require.Equal(t, api.EventReset, f.event)
			var e api.Event
			require.NoError(t, json.Unmarshal([]byte(f.data), &e))
			assert.Equal(t, api.EventReset, e.Type)
			assert.NotEmpty(t, f.id, "a reset moves the client's last id to now")
		})
	}
}

func TestEventsScopedByKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := h.createConnection(t, "jira", "team-a")
	cb := h.createConnection(t, "jira", "team-b")
	keyA := h.createKey(t, "team-a")
	keyB := h.createKey(t, "team-b")
	subA := h.subscribe(t, keyA, "", "")
	subB := h.subscribe(t, keyB, "", "")
	subAdmin := h.subscribe(t, h.adminKey, "", "")

	a := h.connectAgent(t, ca.AgentToken, testHello("agent-a", 1), echo)
	defer a.Close()
	requireTransition(t, subAdmin.nextEvent(t, ca.ID, api.EventTunnel), "never_connected", "connected", "")
	b := h.connectAgent(t, cb.AgentToken, testHello("agent-b", 1), echo)
	defer b.Close()
	requireTransition(t, subAdmin.nextEvent(t, cb.ID, api.EventTunnel), "never_connected", "connected", "")

	// Events arrive in order: team-b's first event must already be its
	// own connection's, with team-a's published before it withheld.
	for name, tt := range map[string]struct {
		sub  *eventStream
		want string
	}{
		"team-a": {subA, ca.ID},
		"team-b": {subB, cb.ID},
	} {
		_, e := tt.sub.nextDecoded(t)
		assert.Equal(t, tt.want, e.ConnectionID, name)
	}

	// Naming another workspace's connection looks like naming none.
	_, r := h.openEvents(t, keyB, "", "?connection_id="+ca.ID)
	requireRefusal(t, r, http.StatusNotFound, protocol.ConnectionNotFound)
	_, r = h.openEvents(t, keyB, "", "?connection_id=conn_missing")
	requireRefusal(t, r, http.StatusNotFound, protocol.ConnectionNotFound)
	_, r = h.openEvents(t, "pak_nope", "", "")
	requireRefusal(t, r, http.StatusUnauthorized, protocol.APIAuthRequired)
}

func TestEventsOverflowNoticeOnTheWire(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gate := make(chan struct{})
	sub, _ := h.openEventsGated(t, h.adminKey, "", "", gate)
	require.NotNil(t, sub)
	// The client reads nothing until socket buffers and the subscriber
	// buffer are full many times over.
	const n = 120_000
	for range n {
		h.srv.events.Publish(api.Event{Type: api.EventTunnel, ConnectionID: "conn_flood", Workspace: "default",
			From: "connected", To: "disconnected", Reason: protocol.AgentOffline})
	}
	close(gate)
	var events int
	var last sseFrame
	for f := range sub.frames {
		if f.event != "" {
			events++
			last = f
		}
	}
	assert.Equal(t, api.EventOverflow, last.event, "the stream ends with an overflow notice")
	assert.Less(t, events, n)
}

func TestEventsKeepAliveAndClose(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.EventKeepAlive = 20 * time.Millisecond })
	sub := h.subscribe(t, h.adminKey, "", "")
	deadline := time.After(waitFor)
	for keepalives := 0; keepalives < 2; {
		select {
		case f := <-sub.frames:
			if f.comment == "keepalive" {
				keepalives++
			}
		case <-deadline:
			require.FailNow(t, "no keepalive comments")
		}
	}

	// Close ends open streams rather than waiting for their clients.
	closed := make(chan struct{})
	go func() { h.srv.Close(); close(closed) }()
	requireDone(t, closed, "Close waited on an event stream")
	requireDone(t, sub.done, "the stream did not end")
}

// keyRevokingStore reports one API key as revoked once armed, as another
// admin tool or node would leave it in the store.
type keyRevokingStore struct {
	store.Store
	revoked atomic.Bool
}

func (s *keyRevokingStore) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	k, err := s.Store.GetAPIKey(ctx, id)
	if err == nil && !k.Admin && s.revoked.Load() {
		at := time.Now()
		k.RevokedAt = &at
	}
	return k, err
}

func TestEventsStreamEndsWhenKeyIsRevoked(t *testing.T) {
	t.Parallel()
	ks := &keyRevokingStore{}
	h := newHarness(t, func(c *Config) {
		ks.Store = c.Store
		c.Store = ks
		c.EventKeepAlive = 20 * time.Millisecond
	})
	sub := h.subscribe(t, h.createKey(t, "team-a"), "", "")
	admin := h.subscribe(t, h.adminKey, "", "")
	ks.revoked.Store(true)
	requireDone(t, sub.done, "the stream of a revoked key goes on")
	select {
	case <-admin.done:
		assert.Fail(t, "a valid key's stream ended too")
	case <-time.After(100 * time.Millisecond):
	}
}
