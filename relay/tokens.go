package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/postern/postern/relay/store"
)

// tokenTimers cut, when a rotation's overlap ends, the tunnels still open
// with the tokens it expired: one timer per connection and expiry.
type tokenTimers struct {
	mu     sync.Mutex
	timers map[string]*time.Timer
	closed bool
}

// schedule runs cut(connID) at until (at once when it has passed).
func (t *tokenTimers) schedule(connID string, until time.Time, cut func(connID string)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if t.timers == nil {
		t.timers = map[string]*time.Timer{}
	}
	key := connID + "@" + until.String()
	if t.timers[key] != nil {
		return
	}
	t.timers[key] = time.AfterFunc(time.Until(until), func() {
		t.mu.Lock()
		delete(t.timers, key)
		t.mu.Unlock()
		cut(connID)
	})
}

func (t *tokenTimers) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, tm := range t.timers {
		tm.Stop()
	}
}

// cutExpired closes this node's tunnels of a connection whose token is no
// longer valid (expired by a rotation, or gone); the agent reconnects with
// the token it has, which the relay then judges.
func (s *Server) cutExpired(connID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now()
	for _, sess := range s.broker.All() {
		if sess.ConnectionID != connID || sess.Closed() {
			continue
		}
		tok, err := s.store.GetToken(ctx, sess.TokenID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("check the token of a tunnel", "connection", connID, "err", err)
			continue
		}
		if err == nil && tok.ValidAt(now) {
			continue
		}
		s.log.Info("tunnel closed: its agent token expired", "connection", connID, "session", sess.ID)
		_ = sess.Close()
	}
}
