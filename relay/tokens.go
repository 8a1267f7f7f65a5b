package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
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

// tokenWatch holds each tunnel of this node to the agent token that
// opened it: it reads the token once the tunnel is registered, so a token
// that ended during the handshake refuses the tunnel, and a token with an
// end cuts it then, even where no rotation was heard (a node that started
// later). A rotation after this read finds the tunnel registered.
type tokenWatch struct{ s *Server }

func (w tokenWatch) SessionUp(ctx context.Context, sess *broker.Session) error {
	tok, err := w.s.store.GetToken(ctx, sess.TokenID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return protocol.Errorf(protocol.AgentTokenInvalid, "agent token %s no longer exists", sess.TokenID)
	case err != nil:
		// The store's trouble is no reason to drop a tunnel whose token
		// was good a moment ago; the rotation's own cut still comes.
		w.s.log.Warn("check the token of a new tunnel", "connection", sess.ConnectionID, "err", err)
	case !tok.ValidAt(time.Now()):
		return protocol.Errorf(protocol.AgentTokenInvalid, "%s", tokenEnded(tok))
	case tok.ExpiresAt != nil:
		w.s.tokens.schedule(sess.ConnectionID, *tok.ExpiresAt, w.s.cutExpired)
	}
	return nil
}

func (tokenWatch) SessionHealth(*broker.Session, protocol.Allowlist)       {}
func (tokenWatch) SessionSeen(context.Context, *broker.Session, time.Time) {}
func (tokenWatch) SessionDown(*broker.Session)                             {}

// tokenEnded tells an agent that the token of its tunnel ended.
func tokenEnded(tok store.Token) string {
	return "agent token " + tok.ID + " expired at " + tok.ExpiresAt.UTC().Format(time.RFC3339) + "; connect with the newer token"
}

// cutExpired closes this node's tunnels of a connection whose token is no
// longer valid (expired by a rotation or by time, or gone), telling each
// agent why; the agent reconnects with the token it has, which the relay
// then judges.
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
		msg := "agent token " + sess.TokenID + " no longer exists"
		if err == nil {
			msg = tokenEnded(tok)
		}
		s.log.Info("tunnel closed: its agent token expired", "connection", connID, "session", sess.ID, "token", sess.TokenID)
		_ = sess.Notify(protocol.FrameRevoked, protocol.Revoked{Message: msg, Reason: protocol.AgentTokenInvalid})
		_ = sess.Close()
	}
}
