package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/postern/postern/protocol/tunnel"
)

// Backoff of a peer that could not be reached: it is skipped until the
// wait passes, doubling up to the cap while it stays down.
const (
	peerBackoffBase = 500 * time.Millisecond
	peerBackoffMax  = 30 * time.Second
	// peerDialTimeout bounds dialling a peer link, within the request's
	// own deadline.
	peerDialTimeout = 5 * time.Second
)

// links are this node's peer links to the other nodes, dialled on first
// use and kept. A link that fails puts its node in backoff.
type links struct {
	dial func(ctx context.Context, peerURL string) (*tunnel.Session, error)
	urls func(node string) (string, bool)

	mu    sync.Mutex
	nodes map[string]*link
}

// link is one peer: its live session, or when it was last found down.
type link struct {
	sess      *tunnel.Session
	dialing   chan struct{} // closed when the dial in flight ends
	downUntil time.Time
	backoff   time.Duration
}

var errBackoff = errors.New("peer in backoff after a failure")

// get returns the live link to node, dialling it if needed. Concurrent
// callers share one dial.
func (l *links) get(ctx context.Context, node string) (*tunnel.Session, error) {
	for {
		l.mu.Lock()
		lk := l.nodes[node]
		if lk == nil {
			lk = &link{}
			l.nodes[node] = lk
		}
		switch {
		case lk.sess != nil && !lk.sess.IsClosed():
			s := lk.sess
			l.mu.Unlock()
			return s, nil
		case time.Now().Before(lk.downUntil):
			l.mu.Unlock()
			return nil, errBackoff
		case lk.dialing != nil:
			wait := lk.dialing
			l.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		lk.dialing = make(chan struct{})
		l.mu.Unlock()
		return l.connect(ctx, node, lk)
	}
}

// connect dials node and records the outcome on lk.
func (l *links) connect(ctx context.Context, node string, lk *link) (*tunnel.Session, error) {
	sess, err := l.dialNode(ctx, node)
	l.mu.Lock()
	defer l.mu.Unlock()
	close(lk.dialing)
	lk.dialing = nil
	if err != nil {
		l.downLocked(lk)
		return nil, err
	}
	lk.sess, lk.backoff, lk.downUntil = sess, 0, time.Time{}
	return sess, nil
}

func (l *links) dialNode(ctx context.Context, node string) (*tunnel.Session, error) {
	u, ok := l.urls(node)
	if !ok {
		return nil, errors.New("no peer address known for node " + node)
	}
	ctx, cancel := context.WithTimeout(ctx, peerDialTimeout)
	defer cancel()
	return l.dial(ctx, u)
}

// failed puts node in backoff after sess failed it.
func (l *links) failed(node string, sess *tunnel.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk := l.nodes[node]; lk != nil && lk.sess == sess {
		_ = sess.Close()
		lk.sess = nil
		l.downLocked(lk)
	}
}

func (l *links) downLocked(lk *link) {
	lk.backoff = min(max(lk.backoff*2, peerBackoffBase), peerBackoffMax)
	lk.downUntil = time.Now().Add(lk.backoff)
}

// inBackoff reports whether node is being skipped.
func (l *links) inBackoff(node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.nodes[node]
	return lk != nil && time.Now().Before(lk.downUntil)
}

// forget closes the link to node, which left the cluster.
func (l *links) forget(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk := l.nodes[node]; lk != nil && lk.sess != nil {
		_ = lk.sess.Close()
	}
	delete(l.nodes, node)
}

// up counts the links that are up, for metrics.
func (l *links) up() (up, down int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lk := range l.nodes {
		if lk.sess != nil && !lk.sess.IsClosed() {
			up++
		} else {
			down++
		}
	}
	return up, down
}

// closeAll closes every link.
func (l *links) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for node, lk := range l.nodes {
		if lk.sess != nil {
			_ = lk.sess.Close()
		}
		delete(l.nodes, node)
	}
}

// dialPeer opens a peer link to the node at peerURL with the cluster key.
func dialPeer(ctx context.Context, peerURL string, key []byte, hc *http.Client, cfg tunnel.Config) (*tunnel.Session, error) {
	base, err := url.Parse(peerURL)
	if err != nil {
		return nil, err
	}
	return tunnel.Dial(ctx, base, tunnel.DialOptions{HTTPClient: hc, Token: string(key), UserAgent: "postern-relay-peer", Config: cfg, Peer: true})
}
