package cluster

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/postern/postern/relay/store"
)

// Holders lists the other nodes with a tunnel of the connection: live ones
// and, as a last resort, those whose tunnels were told to go away; each
// list has the nodes in backoff after a failure last, then fewest streams
// first. A node in backoff is listed so that the router can tell "held
// by a node it cannot reach" from "held nowhere"; asking it fails at once.
func (n *Node) Holders(ctx context.Context, connID string) (live, draining []string, err error) {
	ps, err := n.holders.presence(ctx, connID, n.presenceElsewhere)
	if err != nil {
		return nil, nil, err
	}
	load := map[string]int64{}
	isLive := map[string]bool{}
	for _, p := range ps {
		v, _ := decodeView(p.View)
		load[p.NodeID] += v.Active
		if !p.Draining {
			isLive[p.NodeID] = true
		}
	}
	for node := range load {
		if isLive[node] {
			live = append(live, node)
		} else {
			draining = append(draining, node)
		}
	}
	down := map[string]bool{}
	for node := range load {
		down[node] = n.links.inBackoff(node)
	}
	order := func(ns []string) {
		sort.Slice(ns, func(i, j int) bool {
			a, b := ns[i], ns[j]
			if down[a] != down[b] {
				return !down[a]
			}
			return load[a] < load[b] || load[a] == load[b] && a < b
		})
	}
	order(live)
	order(draining)
	return live, draining, nil
}

// presenceElsewhere reads the open sessions of a connection on the other
// nodes.
func (n *Node) presenceElsewhere(ctx context.Context, connID string) ([]store.Presence, error) {
	ps, err := n.st.PresenceOf(ctx, connID, time.Now())
	if err != nil {
		return nil, err
	}
	out := ps[:0]
	for _, p := range ps {
		if p.NodeID != n.cfg.NodeID {
			out = append(out, p)
		}
	}
	return out, nil
}

// holdersTTL is how long the other nodes' sessions of a connection are
// served from memory: forwarded requests cost no store read while the
// tunnels stay where they are. A node found not to hold a tunnel any more
// drops the entry (forget), and "held nowhere" is never cached, so a
// tunnel that comes up elsewhere is used at once.
const holdersTTL = time.Second

// holderCacheMax bounds the cache; past it, lapsed entries are dropped.
const holderCacheMax = 10000

type holderCache struct {
	mu sync.Mutex
	m  map[string]holderEntry
}

type holderEntry struct {
	ps []store.Presence
	at time.Time
}

// presence returns connID's sessions elsewhere, from memory when fresh,
// else from read.
func (c *holderCache) presence(ctx context.Context, connID string,
	read func(context.Context, string) ([]store.Presence, error)) ([]store.Presence, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[connID]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < holdersTTL {
		return e.ps, nil
	}
	ps, err := read(ctx, connID)
	if err != nil || len(ps) == 0 {
		c.forget(connID)
		return ps, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]holderEntry{}
	}
	if len(c.m) >= holderCacheMax {
		for id, old := range c.m {
			if now.Sub(old.at) >= holdersTTL {
				delete(c.m, id)
			}
		}
	}
	if len(c.m) < holderCacheMax {
		c.m[connID] = holderEntry{ps: ps, at: now}
	}
	return ps, nil
}

// forget drops connID's entry: one of its holders said it holds no
// tunnel any more.
func (c *holderCache) forget(connID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, connID)
}
