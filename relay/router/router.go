// Package router takes a request for a connection to an agent that can
// serve it: a tunnel of this node, picked by the broker. When none can, it
// answers with the reason the product must see — the connection was
// revoked, no agent ever connected, the agents are offline, or an agent is
// failing with a bad token — so that a CONNECT, a forwarded http://
// request and a live check all explain a refusal the same way.
//
// It decides nothing about targets: the agent does.
package router

import (
	"context"
	"errors"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/store"
)

// Explainer says why a connection has no live tunnel.
type Explainer interface {
	Offline(ctx context.Context, c store.Connection) *protocol.Error
}

// Router sends requests to agents.
type Router struct {
	broker  *broker.Broker
	explain Explainer
}

// New returns a router over b's tunnels.
func New(b *broker.Broker, explain Explainer) *Router {
	return &Router{broker: b, explain: explain}
}

// Ask sends req to one of c's agents and returns the agent's stream after
// an ok result, or the refusal to answer with.
func (r *Router) Ask(ctx context.Context, c store.Connection, req protocol.Request, timeout time.Duration) (*broker.Stream, protocol.Result, *protocol.Error) {
	if c.Revoked() {
		return nil, protocol.Result{}, protocol.Errorf(protocol.ConnectionRevoked, "connection %s was revoked", c.ID)
	}
	st, res, err := r.broker.Ask(ctx, c.ID, req, timeout)
	if err == nil {
		return st, res, nil
	}
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return nil, res, pe
	case errors.Is(err, broker.ErrNoTunnel):
		return nil, res, r.explain.Offline(ctx, c)
	}
	return nil, res, protocol.Errorf(protocol.InternalError, "ask agent: %v", err)
}
