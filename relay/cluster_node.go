package relay

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/cluster"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/webhook"
)

// book is the status book of the node: in memory on a single node, the
// cluster's shared one otherwise (which makes s.node).
func (s *Server) book(local func(connID string) []status.View) (status.Book, error) {
	if s.cfg.Cluster == nil {
		return status.NewMemoryBook(local, s.events, s.recordHistory()), nil
	}
	cc := s.cfg.Cluster
	node, err := cluster.New(cluster.Config{
		NodeID: s.cfg.NodeID, PeerURL: cc.PeerAdvertise, Key: cc.Key, Heartbeat: s.cfg.HeartbeatInterval,
		Lease: cc.Lease, IdleTimeout: s.cfg.IdleTimeout, MaxStreams: s.cfg.MaxStreamsPerTunnel, PeerTLS: cc.PeerTLS,
	}, s.store.(store.Cluster), s.store, s.log, s.metrics.reg)
	if err != nil {
		return nil, err
	}
	s.node = node
	book := node.NewBook()
	hooks := cluster.Receivers{}
	for _, w := range s.cfg.Webhooks {
		hooks[w.ID()] = webhook.NewReceiver(w, s.webhookClient, s.log, s.cfg.Version)
	}
	book.SetReceivers(hooks)
	s.events.SetHistory(book.History)
	return book, nil
}

// listenCluster acts on what other nodes announce: a revoked connection's
// tunnels are cut, and a rotation's expiring tokens are watched here too.
func (s *Server) listenCluster() {
	s.node.Handle(cluster.ChannelRevoke, func(connID string) {
		s.auth.ForgetConnection(connID)
		if n := s.broker.CloseConnection(connID, revokedMessage); n > 0 {
			s.log.Info("connection revoked on another node: tunnels closed", "connection", connID, "tunnels_closed", n)
		}
	})
	s.node.Handle(cluster.ChannelTokens, func(payload string) {
		connID, at, ok := strings.Cut(payload, " ")
		until, err := time.Parse(time.RFC3339Nano, at)
		if ok && err == nil {
			s.tokens.schedule(connID, until, s.cutExpired)
		}
	})
	s.node.Handle(cluster.ChannelKeys, func(keyID string) {
		if n := s.auth.CutKey(keyID); n > 0 {
			s.log.Info("api key revoked on another node: its streams closed", "key", keyID, "streams_closed", n)
		}
	})
	s.node.OnResync(s.recheckTunnels)
	s.node.OnResync(s.recheckKeys)
}

// recheckKeys ends the streams here of API keys revoked while this node
// could not hear the cluster's announcements. (An expired key's streams
// end by themselves.)
func (s *Server) recheckKeys() {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	for _, id := range s.auth.HeldKeys() {
		k, err := s.store.GetAPIKey(ctx, id)
		if errors.Is(err, store.ErrNotFound) || err == nil && auth.KeyEnded(k, time.Now()) != nil {
			n := s.auth.CutKey(id)
			s.log.Info("api key revoked while the cluster was out of reach: its streams closed", "key", id, "streams_closed", n)
		}
	}
}

// recheckTunnels cuts the tunnels here of connections revoked, or of
// tokens expired, while this node could not hear the cluster's
// announcements.
func (s *Server) recheckTunnels() {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for _, sess := range s.broker.All() {
		id := sess.ConnectionID
		if seen[id] {
			continue
		}
		seen[id] = true
		c, err := s.store.GetConnection(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound) || err == nil && c.Revoked():
			s.auth.ForgetConnection(id)
			if n := s.broker.CloseConnection(id, revokedMessage); n > 0 {
				s.log.Info("connection revoked while the cluster was out of reach: tunnels closed", "connection", id, "tunnels_closed", n)
			}
		case err == nil:
			s.cutExpired(id)
		}
	}
}

// revokedMessage is what an agent is told when its connection is revoked.
const revokedMessage = "connection revoked by an administrator"

// fanout carries what the API changed to every node.
type fanout struct{ s *Server }

// Revoked cuts the connection's tunnels here and, in a cluster,
// everywhere.
func (f fanout) Revoked(ctx context.Context, connID string) int {
	f.s.auth.ForgetConnection(connID)
	n := f.s.broker.CloseConnection(connID, revokedMessage)
	if f.s.node != nil {
		if err := f.s.node.Announce(ctx, cluster.ChannelRevoke, connID); err != nil {
			f.s.log.Warn("announce revocation to the cluster", "connection", connID, "err", err)
		}
	}
	return n
}

// KeyRevoked ends the streams of an API key here and, in a cluster,
// everywhere.
func (f fanout) KeyRevoked(ctx context.Context, keyID string) int {
	n := f.s.auth.CutKey(keyID)
	if f.s.node != nil {
		if err := f.s.node.Announce(ctx, cluster.ChannelKeys, keyID); err != nil {
			f.s.log.Warn("announce api key revocation to the cluster", "key", keyID, "err", err)
		}
	}
	return n
}

// Rotated cuts, when they expire, the tunnels opened with the tokens a
// rotation gave an end, on every node.
func (f fanout) Rotated(ctx context.Context, connID string, until time.Time) {
	if f.s.node != nil {
		payload := connID + " " + until.UTC().Format(time.RFC3339Nano)
		if err := f.s.node.Announce(ctx, cluster.ChannelTokens, payload); err == nil {
			return // this node hears it too
		}
	}
	f.s.tokens.schedule(connID, until, f.s.cutExpired)
}

// nodes lists the nodes of the cluster, or this one alone.
func (s *Server) nodes(ctx context.Context) ([]api.Node, error) {
	if s.node == nil {
		return []api.Node{{ID: s.cfg.NodeID, Sessions: len(s.broker.All()), Draining: s.stopping.Load(), Self: true}}, nil
	}
	ns, err := s.node.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Node, len(ns))
	for i, n := range ns {
		out[i] = api.Node{ID: n.ID, PeerURL: n.PeerURL, Draining: n.Draining, Sessions: n.Sessions,
			StartedAt: n.StartedAt, RenewedAt: n.RenewedAt, LeaseUntil: n.LeaseUntil, Self: n.ID == s.cfg.NodeID}
	}
	return out, nil
}
