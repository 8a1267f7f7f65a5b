package relay

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// Registry errors.
var (
	// ErrNoTunnel means no agent tunnel of the connection is up on this node.
	ErrNoTunnel = errors.New("no agent tunnel is up")
)

// session is one agent tunnel: a WebSocket carrying a yamux session, with
// the control stream the agent opened first.
type session struct {
	id           string
	connectionID string
	tokenID      string
	remote       string
	hello        protocol.Hello
	connectedAt  time.Time
	mux          *tunnel.Session

	active   atomic.Int64 // streams open now
	draining atomic.Bool  // GoAway sent: no new streams
	total    atomic.Uint64
	mu       sync.Mutex
	health   protocol.Health
	lastBeat time.Time
}

// noticeTimeout bounds writing one notice (GoAway, Revoked) to an agent.
const noticeTimeout = 5 * time.Second

func (s *session) notify(t protocol.FrameType, v any) error {
	return s.mux.Send(t, v, noticeTimeout)
}

func (s *session) recordHealth(h protocol.Health, at time.Time) {
	s.mu.Lock()
	s.health = h
	s.lastBeat = at
	s.mu.Unlock()
}

func (s *session) snapshot() (protocol.Health, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health, s.lastBeat
}

// allowlist returns the newest allowlist summary the agent reported.
func (s *session) allowlist() protocol.Allowlist {
	h, beat := s.snapshot()
	if beat.IsZero() {
		return s.hello.Allowlist
	}
	return h.Allowlist
}

// openStream opens a relay-side stream to the agent and counts it as
// active until the returned release func is called.
func (s *session) openStream(ctx context.Context) (*tunnel.Stream, func(), error) {
	st, err := s.mux.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.active.Add(1)
	s.total.Add(1)
	var once sync.Once
	return st, func() { once.Do(func() { s.active.Add(-1) }) }, nil
}

// connState is what the node knows about one connection's tunnels.
type connState struct {
	sessions []*session
	// lastAuthFailure is the last time an agent presented this
	// connection's token id with a wrong or expired secret.
	lastAuthFailure time.Time
	authFailures    int
	lastAuthError   string
}

// Registry holds the live agent sessions of this node, by connection.
// It is the only owner of session lifetimes: Close of a session happens
// through it, so that revocation reaches every tunnel.
type Registry struct {
	mu    sync.Mutex
	conns map[string]*connState
}

func newRegistry() *Registry {
	return &Registry{conns: make(map[string]*connState)}
}

func (r *Registry) state(connID string) *connState {
	st := r.conns[connID]
	if st == nil {
		st = &connState{}
		r.conns[connID] = st
	}
	return st
}

// add registers a session. The newest sessions of an agent win: beyond
// the number of tunnels the agent wants, its oldest live sessions are
// returned for the caller to close. They are ones the agent has given up
// on (it reconnected after a hang or a lost link) but that this node has
// not yet seen die.
func (r *Registry) add(s *session) (stale []*session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state(s.connectionID)
	st.sessions = append(st.sessions, s)
	var same []*session
	for _, x := range st.sessions {
		if x.hello.AgentID == s.hello.AgentID && !x.draining.Load() && !x.mux.IsClosed() {
			same = append(same, x) // in registration order, oldest first
		}
	}
	if extra := len(same) - max(s.hello.Tunnels, 1); extra > 0 {
		stale = same[:extra]
	}
	return stale
}

func (r *Registry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.conns[s.connectionID]
	if st == nil {
		return
	}
	for i, x := range st.sessions {
		if x == s {
			st.sessions = append(st.sessions[:i], st.sessions[i+1:]...)
			break
		}
	}
}

// recordAuthFailure notes a refused token for a connection.
func (r *Registry) recordAuthFailure(connID, msg string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state(connID)
	st.lastAuthFailure = at
	st.authFailures++
	st.lastAuthError = msg
}

// sessions returns a copy of the live sessions of a connection.
func (r *Registry) sessions(connID string) []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.conns[connID]
	if st == nil {
		return nil
	}
	out := make([]*session, 0, len(st.sessions))
	for _, s := range st.sessions {
		if !s.mux.IsClosed() && !s.draining.Load() {
			out = append(out, s)
		}
	}
	return out
}

// all returns every registered session.
func (r *Registry) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*session
	for _, st := range r.conns {
		out = append(out, st.sessions...)
	}
	return out
}

// goAwayAll sends GoAway on every live session and stops giving it new
// streams. It returns how many sessions were told.
func (r *Registry) goAwayAll(g protocol.GoAway) int {
	n := 0
	for _, s := range r.all() {
		if s.mux.IsClosed() || s.draining.Swap(true) {
			continue
		}
		_ = s.notify(protocol.FrameGoAway, g)
		n++
	}
	return n
}

// activeStreams counts proxied streams open on this node.
func (r *Registry) activeStreams() int64 {
	var n int64
	for _, s := range r.all() {
		n += s.active.Load()
	}
	return n
}

// authFailure returns the last auth failure of a connection.
func (r *Registry) authFailure(connID string) (time.Time, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.conns[connID]
	if st == nil {
		return time.Time{}, ""
	}
	return st.lastAuthFailure, st.lastAuthError
}

// candidates orders a connection's sessions by fewest active streams, so
// streams spread across tunnels and agent replicas.
func (r *Registry) candidates(connID string) []*session {
	ss := r.sessions(connID)
	// Fewest active streams first; among equals the newest session, which
	// is the likeliest to be alive.
	sort.SliceStable(ss, func(i, j int) bool {
		ai, aj := ss[i].active.Load(), ss[j].active.Load()
		if ai != aj {
			return ai < aj
		}
		return ss[i].connectedAt.After(ss[j].connectedAt)
	})
	return ss
}

// closeConnection tells every tunnel of a connection that it was revoked
// and closes it; open streams end with it.
func (r *Registry) closeConnection(connID, msg string) int {
	r.mu.Lock()
	var ss []*session
	if st := r.conns[connID]; st != nil {
		ss = append(ss, st.sessions...) // draining ones too
	}
	r.mu.Unlock()
	for _, s := range ss {
		_ = s.notify(protocol.FrameRevoked, protocol.Revoked{Message: msg})
		_ = s.mux.Close()
	}
	return len(ss)
}

// closeAll closes every session (relay shutdown).
func (r *Registry) closeAll() {
	for _, s := range r.all() {
		_ = s.mux.Close()
	}
}
