package broker

import (
	"sort"
	"sync"
)

// registry holds the live sessions of this node by connection. It is the
// only owner of session lifetimes: a session is closed through it, so that
// revocation reaches every tunnel.
type registry struct {
	mu    sync.Mutex
	conns map[string][]*Session
	// held counts each connection's tunnels from Reserve to their end,
	// handshakes included.
	held map[string]int
}

// reserve takes one of a connection's max tunnel places; false when all
// are held. Zero max means no cap.
func (r *registry) reserve(connID string, max int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held == nil {
		r.held = make(map[string]int)
	}
	if max > 0 && r.held[connID] >= max {
		return false
	}
	r.held[connID]++
	return true
}

// release gives a place back.
func (r *registry) release(connID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held[connID]--; r.held[connID] <= 0 {
		delete(r.held, connID)
	}
}

// add registers a session. The newest sessions of an agent process win:
// beyond the number of tunnels the process wants, its oldest live sessions
// are returned as stale for the caller to close. They are ones the process
// has given up on (it reconnected after a hang or a lost link) but that
// this node has not yet seen die. others are the live sessions of the same
// agent id from other processes: a second process with the same config,
// or the previous run of a restarted agent; the caller tells them apart.
func (r *registry) add(s *Session) (stale, others []*Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		r.conns = make(map[string][]*Session)
	}
	r.conns[s.ConnectionID] = append(r.conns[s.ConnectionID], s)
	var same []*Session
	key := s.Hello.ProcessKey()
	for _, x := range r.conns[s.ConnectionID] {
		switch {
		case x.Hello.AgentID != s.Hello.AgentID || x.Draining() || x.Closed():
		case x.Hello.ProcessKey() == key:
			same = append(same, x) // in registration order, oldest first
		default:
			others = append(others, x)
		}
	}
	if extra := len(same) - max(s.Hello.Tunnels, 1); extra > 0 {
		stale = same[:extra]
	}
	return stale, others
}

func (r *registry) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ss := r.conns[s.ConnectionID]
	for i, x := range ss {
		if x == s {
			ss = append(ss[:i], ss[i+1:]...)
			break
		}
	}
	if len(ss) == 0 {
		delete(r.conns, s.ConnectionID)
		return
	}
	r.conns[s.ConnectionID] = ss
}

// of returns a copy of a connection's sessions, draining ones too.
func (r *registry) of(connID string) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Session(nil), r.conns[connID]...)
}

// live returns a connection's sessions that take new streams.
func (r *registry) live(connID string) []*Session {
	var out []*Session
	for _, s := range r.of(connID) {
		if !s.Closed() && !s.Draining() {
			out = append(out, s)
		}
	}
	return out
}

// all returns every registered session.
func (r *registry) all() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Session
	for _, ss := range r.conns {
		out = append(out, ss...)
	}
	return out
}

// byLoad orders sessions by fewest active streams, so streams spread across
// tunnels and agent replicas; among equals the newest session, which is
// the likeliest to be alive, comes first.
func byLoad(ss []*Session) []*Session {
	sort.SliceStable(ss, func(i, j int) bool {
		ai, aj := ss[i].Active(), ss[j].Active()
		if ai != aj {
			return ai < aj
		}
		return ss[i].ConnectedAt.After(ss[j].ConnectedAt)
	})
	return ss
}
