package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// noticeTimeout bounds writing one notice (GoAway, Revoked) to an agent.
const noticeTimeout = 5 * time.Second

// Identity is who a tunnel belongs to, as authenticated before the upgrade.
type Identity struct {
	ConnectionID string
	TokenID      string
	// Remote is the peer address, for logs.
	Remote string
}

// Session is one agent tunnel of this node, from Welcome to its end.
type Session struct {
	Identity
	// ID names the session in Welcome and in logs.
	ID          string
	Hello       protocol.Hello
	ConnectedAt time.Time

	mux      *tunnel.Session
	active   atomic.Int64 // streams open now
	draining atomic.Bool  // GoAway sent: no new streams

	// noticeMu orders the DUPLICATE_AGENT notices; duplicate is what the
	// agent was last told.
	noticeMu  sync.Mutex
	duplicate bool

	mu       sync.Mutex
	health   protocol.Health
	lastBeat time.Time
}

// Duplicate reports whether the session was last told that another
// process of its agent id is live on this node.
func (s *Session) Duplicate() bool {
	s.noticeMu.Lock()
	defer s.noticeMu.Unlock()
	return s.duplicate
}

// Active is the number of streams open on the session.
func (s *Session) Active() int64 { return s.active.Load() }

// Draining reports whether the session was told to go away.
func (s *Session) Draining() bool { return s.draining.Load() }

// Closed reports whether the tunnel has ended.
func (s *Session) Closed() bool { return s.mux.IsClosed() }

// Done is closed when the tunnel ends.
func (s *Session) Done() <-chan struct{} { return s.mux.Done() }

// Close ends the tunnel and every stream on it.
func (s *Session) Close() error { return s.mux.Close() }

// Notify sends a notice on the control stream.
func (s *Session) Notify(t protocol.FrameType, v any) error {
	return s.mux.Send(t, v, noticeTimeout)
}

func (s *Session) recordHealth(h protocol.Health, at time.Time) {
	s.mu.Lock()
	s.health = h
	s.lastBeat = at
	s.mu.Unlock()
}

// Health returns the newest Health report and when it arrived; a zero time
// means none yet.
func (s *Session) Health() (protocol.Health, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health, s.lastBeat
}

// LastBeat is when the agent last reported, or the session's start.
func (s *Session) LastBeat() time.Time {
	_, beat := s.Health()
	if beat.IsZero() {
		return s.ConnectedAt
	}
	return beat
}

// Allowlist is the newest allowlist summary the agent reported.
func (s *Session) Allowlist() protocol.Allowlist {
	h, beat := s.Health()
	if beat.IsZero() {
		return s.Hello.Allowlist
	}
	return h.Allowlist
}

// open opens a stream to the agent and counts it as active until the
// returned release func is called.
func (s *Session) open(ctx context.Context) (*tunnel.Stream, func(), error) {
	st, err := s.mux.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.active.Add(1)
	var once sync.Once
	return st, func() { once.Do(func() { s.active.Add(-1) }) }, nil
}
