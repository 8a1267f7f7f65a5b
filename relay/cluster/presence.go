package cluster

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// presenceWriteTimeout bounds a write made on a session's own goroutine.
const presenceWriteTimeout = 2 * time.Second

// presence writes this node's sessions to the cluster. A session is
// written when it starts and when it ends, on its own goroutine, so the
// cluster sees it before its status is computed; Health reports only mark
// it, and the heartbeat writes every marked session in one statement.
type presence struct {
	node *Node

	mu    sync.Mutex
	dirty map[string]*broker.Session
}

// Observer is the node's presence as the broker's Observer.
func (n *Node) Observer() broker.Observer { return &n.presence }

var _ broker.Observer = (*presence)(nil)

// record is the row of s, with a fresh sequence number.
func (p *presence) record(s *broker.Session) store.Presence {
	n := p.node
	view, _ := json.Marshal(status.ViewOf(s, n.cfg.NodeID))
	return store.Presence{
		SessionID: s.ID, ConnectionID: s.ConnectionID, NodeID: n.cfg.NodeID, TokenID: s.TokenID,
		Seq: n.seq.Add(1), Draining: s.Draining() || n.draining.Load(), View: view,
		LeaseUntil: time.Now().Add(n.cfg.Lease),
	}
}

// SessionUp writes the session before anything else hears of it. A write
// that fails is retried by the next heartbeat; the session serves anyway.
func (p *presence) SessionUp(ctx context.Context, s *broker.Session) error {
	ctx, cancel := context.WithTimeout(ctx, presenceWriteTimeout)
	defer cancel()
	p.node.metrics.sessionRows(1)
	if err := p.node.st.PutPresence(ctx, p.record(s)); err != nil {
		p.node.log.Warn("write session presence", "session", s.ID, "err", err)
		p.mark(s)
	}
	return nil
}

// SessionHealth marks the session for the next heartbeat's write.
func (p *presence) SessionHealth(s *broker.Session, _ protocol.Allowlist) { p.mark(s) }

// SessionSeen: the heartbeat renews every lease; nothing to do per
// session.
func (p *presence) SessionSeen(context.Context, *broker.Session, time.Time) {}

// SessionDown leaves the session's tombstone.
func (p *presence) SessionDown(s *broker.Session) {
	p.mu.Lock()
	delete(p.dirty, s.ID)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), presenceWriteTimeout)
	defer cancel()
	rec := p.record(s)
	rec.LeaseUntil = time.Now()
	p.node.metrics.sessionRows(1)
	if err := p.node.st.ClosePresence(ctx, rec); err != nil {
		p.node.log.Warn("close session presence; its lease ends it", "session", s.ID, "err", err)
	}
}

func (p *presence) mark(s *broker.Session) {
	p.mu.Lock()
	p.dirty[s.ID] = s
	p.mu.Unlock()
}

// flush writes every marked session in one statement.
func (p *presence) flush(ctx context.Context) error {
	p.mu.Lock()
	marked := p.dirty
	p.dirty = map[string]*broker.Session{}
	p.mu.Unlock()
	var recs []store.Presence
	for _, s := range marked {
		if !s.Closed() {
			recs = append(recs, p.record(s))
		}
	}
	p.node.metrics.sessionRows(len(recs))
	if err := p.node.st.PutPresences(ctx, recs); err != nil {
		p.mu.Lock()
		for id, s := range marked {
			if _, again := p.dirty[id]; !again {
				p.dirty[id] = s
			}
		}
		p.mu.Unlock()
		return err
	}
	return nil
}

// writeAll writes every live session of the node again: after a lapse, or
// when the node starts draining.
func (p *presence) writeAll(ctx context.Context) error {
	var recs []store.Presence
	for _, s := range p.node.b.All() {
		if !s.Closed() {
			recs = append(recs, p.record(s))
		}
	}
	p.node.metrics.sessionRows(len(recs))
	return p.node.st.PutPresences(ctx, recs)
}

// decodeView reads a session's view from its row.
func decodeView(raw []byte) (status.View, error) {
	var v status.View
	err := json.Unmarshal(raw, &v)
	return v, err
}
