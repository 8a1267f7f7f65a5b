package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// MinKeyLen is the shortest cluster key accepted.
const MinKeyLen = 32

// Config configures a node's part in the cluster.
type Config struct {
	// NodeID names this node; unique in the cluster.
	NodeID string
	// PeerURL is where the other nodes reach this one's peer endpoint
	// (ws:// or wss://; --peer-advertise).
	PeerURL string
	// Key is the shared secret every node presents on its peer links.
	Key []byte
	// Heartbeat is how often presence is renewed and written.
	Heartbeat time.Duration
	// Lease is how long a node's and its sessions' rows live without a
	// renewal; a node killed outright vanishes from routing after it.
	Lease time.Duration
	// IdleTimeout ends a forwarded stream with no traffic either way.
	IdleTimeout time.Duration
	// MaxStreams is the stream cap per tunnel, for the peer links' backlog.
	MaxStreams int
	// PeerTLS verifies the other nodes' certificates on wss:// peer links.
	PeerTLS *tls.Config
}

// Validate reports every setting missing or out of range.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is required"))
	}
	if u, err := url.Parse(c.PeerURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, fmt.Errorf("peer advertise URL %q: want ws://host:port or wss://host:port", c.PeerURL))
	}
	if len(c.Key) < MinKeyLen {
		errs = append(errs, fmt.Errorf("cluster key: at least %d bytes required", MinKeyLen))
	}
	if c.Heartbeat <= 0 || c.Lease <= c.Heartbeat {
		errs = append(errs, errors.New("cluster lease must be longer than the heartbeat, and both positive"))
	}
	if c.IdleTimeout <= 0 || c.MaxStreams < 1 {
		errs = append(errs, errors.New("idle timeout and stream cap must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	return nil
}

// Node is this relay node's membership of the cluster.
type Node struct {
	cfg     Config
	st      store.Cluster
	records store.Store
	log     *slog.Logger
	metrics *metrics

	b     *broker.Broker
	bus   *events.Bus
	local func(connID string) []status.View

	seq      atomic.Int64 // orders this node's presence writes
	draining atomic.Bool  // told the cluster it is leaving
	stopping atomic.Bool  // takes no forwarded request
	resync   atomic.Bool  // a renewal failed: write every session again
	started  time.Time
	links    *links
	presence presence
	book     *Book

	nodesMu sync.Mutex
	nodes   map[string]store.Node
	holders holderCache

	handlers map[string]func(payload string) // set before Run
	onResync []func()                        // set before Run

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // incoming peer links
}

// New returns this node's membership; Bind and Start it before serving.
func New(cfg Config, st store.Cluster, records store.Store, log *slog.Logger, reg metricsRegisterer) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, st: st, records: records, log: log.With("cluster", true), started: time.Now(),
		nodes: map[string]store.Node{}}
	n.seq.Store(time.Now().UnixNano())
	n.ctx, n.cancel = context.WithCancel(context.Background())
	hc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: cfg.PeerTLS, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	n.links = &links{
		nodes: map[string]*link{},
		urls:  n.peerURL,
		dial: func(ctx context.Context, u string) (*tunnel.Session, error) {
			return dialPeer(ctx, u, cfg.Key, hc, n.peerConfig())
		},
	}
	n.presence = presence{node: n, dirty: map[string]*broker.Session{}}
	n.metrics = newMetrics(reg, n.links)
	return n, nil
}

// Bind gives the node the broker whose tunnels it shares, the event bus
// its subscribers read, and the status views of its live sessions.
func (n *Node) Bind(b *broker.Broker, bus *events.Bus, local func(connID string) []status.View) {
	n.b, n.bus, n.local = b, bus, local
}

func (n *Node) broker() *broker.Broker { return n.b }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

func (n *Node) record(draining bool) store.Node {
	now := time.Now()
	return store.Node{ID: n.cfg.NodeID, PeerURL: n.cfg.PeerURL, Draining: draining,
		StartedAt: n.started, RenewedAt: now, LeaseUntil: now.Add(n.cfg.Lease)}
}

// Start registers the node; a node that cannot reach the database does not
// serve.
func (n *Node) Start(ctx context.Context) error {
	if err := n.st.UpsertNode(ctx, n.record(false)); err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	if err := n.book.startEvents(ctx); err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	n.refreshNodes(ctx)
	n.log.Info("joined the cluster", "peer_url", n.cfg.PeerURL)
	return nil
}

// Run keeps the node's presence, listens to the cluster's notifications,
// catches up on events and delivers webhooks until ctx ends.
func (n *Node) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { n.renewLoop(ctx) })
	wg.Go(func() { n.sweepLoop(ctx) })
	wg.Go(func() { n.listenLoop(ctx) })
	wg.Go(func() { n.book.eventsLoop(ctx) })
	wg.Go(func() { n.book.deliverLoop(ctx) })
	wg.Wait()
}

// renewLoop renews the node's lease and its sessions' every heartbeat, and
// writes the sessions whose Health changed, in one statement.
func (n *Node) renewLoop(ctx context.Context) {
	tick.Every(ctx, n.cfg.Heartbeat, func(time.Time) {
		if err := n.renew(ctx); err != nil {
			if !n.resync.Swap(true) {
				n.log.Warn("cluster presence not renewed", "err", err)
			}
		} else if n.resync.Swap(false) {
			n.log.Info("cluster presence renewed again")
		}
	})
}

func (n *Node) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Heartbeat)
	defer cancel()
	if err := n.st.UpsertNode(ctx, n.record(n.draining.Load())); err != nil {
		return err
	}
	if n.resync.Load() {
		// The lease may have lapsed and the rows gone: write them all.
		return n.presence.writeAll(ctx)
	}
	n.metrics.renewal()
	if err := n.st.RenewPresence(ctx, n.cfg.NodeID, time.Now().Add(n.cfg.Lease)); err != nil {
		return err
	}
	n.refreshNodes(ctx)
	return n.presence.flush(ctx)
}

// sweepLoop drops the rows of nodes and sessions whose lease lapsed, and
// republishes the status of the connections they belonged to.
func (n *Node) sweepLoop(ctx context.Context) {
	tick.Every(ctx, n.cfg.Lease/2, func(now time.Time) {
		conns, err := n.st.ExpirePresence(ctx, now, tombstoneKeep)
		if err != nil {
			return
		}
		for _, id := range conns {
			n.book.expired(id)
		}
	})
}

// tombstoneKeep is how long a closed session's row outlives it, longer
// than any write about it can be delayed. (Events are the connections'
// history; the relay prunes them after its history retention.)
const tombstoneKeep = time.Hour

// refreshNodes reloads the live nodes and forgets the links of those gone.
func (n *Node) refreshNodes(ctx context.Context) {
	nodes, err := n.st.Nodes(ctx, time.Now())
	if err != nil {
		return
	}
	n.nodesMu.Lock()
	defer n.nodesMu.Unlock()
	fresh := make(map[string]store.Node, len(nodes))
	for _, x := range nodes {
		fresh[x.ID] = x
	}
	for id := range n.nodes {
		if _, ok := fresh[id]; !ok {
			n.links.forget(id)
		}
	}
	n.nodes = fresh
}

func (n *Node) peerURL(node string) (string, bool) {
	n.nodesMu.Lock()
	x, ok := n.nodes[node]
	n.nodesMu.Unlock()
	if !ok {
		n.refreshNodes(n.ctx)
		n.nodesMu.Lock()
		x, ok = n.nodes[node]
		n.nodesMu.Unlock()
	}
	return x.PeerURL, ok
}

// LiveNodes counts the nodes that take new tunnels, as last read.
func (n *Node) LiveNodes() int {
	n.nodesMu.Lock()
	defer n.nodesMu.Unlock()
	live := 0
	for _, x := range n.nodes {
		if !x.Draining {
			live++
		}
	}
	return live
}

// Nodes lists the live nodes of the cluster.
func (n *Node) Nodes(ctx context.Context) ([]store.Node, error) { return n.st.Nodes(ctx, time.Now()) }

// BeginDrain tells the cluster this node is leaving: its tunnels are last
// resorts from now on, and its rows say so.
func (n *Node) BeginDrain(ctx context.Context) {
	n.draining.Store(true)
	if err := n.st.UpsertNode(ctx, n.record(true)); err != nil {
		n.log.Warn("mark node draining", "err", err)
	}
	if err := n.presence.writeAll(ctx); err != nil {
		n.log.Warn("mark sessions draining", "err", err)
	}
	_ = n.st.Notify(ctx, channelNodes, n.cfg.NodeID)
}

// Moved reports whether every connection with a tunnel here also has a
// live tunnel on another node: the agents found their replacements.
func (n *Node) Moved(ctx context.Context) bool {
	for _, s := range n.b.All() {
		if s.Closed() {
			continue
		}
		live, _, err := n.Holders(ctx, s.ConnectionID)
		if err != nil || !slices.ContainsFunc(live, func(node string) bool { return !n.links.inBackoff(node) }) {
			return false
		}
	}
	return true
}

// StopForwarded answers every forwarded request from now on that this node
// holds no tunnel: its agents have moved.
func (n *Node) StopForwarded() { n.stopping.Store(true) }

// Leave takes no more forwarded requests and removes the node and its
// sessions from the cluster.
func (n *Node) Leave(ctx context.Context) {
	n.stopping.Store(true)
	if err := n.st.RemoveNode(ctx, n.cfg.NodeID); err != nil {
		n.log.Warn("leave the cluster", "err", err)
	}
	_ = n.st.Notify(ctx, channelNodes, n.cfg.NodeID)
	n.log.Info("left the cluster")
}

// Close ends the peer links, incoming and outgoing, and waits for them.
// It is idempotent.
func (n *Node) Close() {
	n.stopping.Store(true)
	n.cancel()
	n.links.closeAll()
	n.wg.Wait()
}
