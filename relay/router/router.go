// Package router takes a request for a connection to an agent that can
// serve it: a tunnel of this node picked by the broker, or, in a cluster,
// the tunnel of another node reached over a peer link. This node is the
// only router of the request: it tries its own tunnels first, then the
// nodes that hold one, skipping a node that answers it no longer does or
// cannot be reached, and only then tunnels already told to go away. When
// none can serve, it answers with the reason the product must see — the
// connection was revoked, no agent ever connected, the agents are
// offline, or an agent is failing with a bad token — so that a CONNECT, a
// forwarded http:// request and a live check all explain a refusal alike.
//
// It decides nothing about targets: the agent does.
package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/store"
)

// Stream is an agent's stream after an ok result, ready for the data
// phase, wherever the tunnel lives. CloseWrite half-closes; Abort ends the
// tunnel or peer link under it, whose writes stopped making progress.
type Stream interface {
	net.Conn
	CloseWrite() error
	Abort()
}

// Explainer says why a connection has no live tunnel.
type Explainer interface {
	Offline(ctx context.Context, c store.Connection) *protocol.Error
}

// Remote reaches the tunnels of the other nodes of a cluster.
type Remote interface {
	// Holders lists the other nodes with a tunnel of the connection: live
	// ones first in the order to try, then those whose tunnels were told
	// to go away.
	Holders(ctx context.Context, connID string) (live, draining []string, err error)
	// Forward asks the connection's agent through node. A node that no
	// longer holds a tunnel, or cannot be reached, is an error the router
	// moves past (Skip reports it); a *protocol.Error is the agent's.
	Forward(ctx context.Context, node, connID string, req protocol.Request, timeout time.Duration, lastResort bool) (Stream, protocol.Result, error)
	// Skip reports whether an error of Forward sends the router on to
	// the next node.
	Skip(err error) bool
	// Unreachable reports whether an error of Forward means the node
	// could not be reached at all (its tunnels may well be up).
	Unreachable(err error) bool
}

// Router sends requests to agents.
type Router struct {
	broker  *broker.Broker
	explain Explainer
	remote  Remote // nil on a single node
}

// New returns a router over b's tunnels and, when remote is not nil, the
// cluster's.
func New(b *broker.Broker, explain Explainer, remote Remote) *Router {
	return &Router{broker: b, explain: explain, remote: remote}
}

// Ask sends req to one of c's agents and returns the agent's stream after
// an ok result, or the refusal to answer with.
func (r *Router) Ask(ctx context.Context, c store.Connection, req protocol.Request, timeout time.Duration) (Stream, protocol.Result, *protocol.Error) {
	if c.Revoked() {
		return nil, protocol.Result{}, protocol.Errorf(protocol.ConnectionRevoked, "connection %s was revoked", c.ID)
	}
	st, res, err := r.local(ctx, r.broker.Candidates(c.ID), req, timeout)
	if done(err) {
		return st, res, refusal(err)
	}
	busy := err // AGENT_BUSY here may be free elsewhere
	if r.remote != nil {
		var rerr error
		st, res, rerr = r.forward(ctx, c.ID, req, timeout)
		if done(rerr) {
			return st, res, refusal(rerr)
		}
		if refusal(rerr) != nil {
			busy = rerr
		}
		if errors.Is(rerr, errUnavailable) && len(r.broker.Draining(c.ID)) == 0 {
			e := protocol.Errorf(protocol.RelayUnavailable, "the cluster's store cannot tell which node holds the tunnel")
			e.RetryAfter = 5
			return nil, res, e
		}
	}
	st, res, err = r.local(ctx, r.broker.Draining(c.ID), req, timeout)
	if done(err) {
		return st, res, refusal(err)
	}
	if r.remote != nil {
		if st, res, err = r.lastResort(ctx, c.ID, req, timeout); done(err) {
			return st, res, refusal(err)
		}
	}
	if pe, ok := busy.(*protocol.Error); ok && pe.Reason == protocol.AgentBusy {
		return nil, res, pe
	}
	if errors.Is(err, errUnreachable) {
		e := protocol.Errorf(protocol.RelayUnavailable, "%v", err)
		e.RetryAfter = unreachableRetryAfter
		return nil, res, e
	}
	return nil, res, r.explain.Offline(ctx, c)
}

// errUnreachable means a node holds a tunnel of the connection but could
// not be reached: the agent may be fine, the relay cannot tell.
var errUnreachable = errors.New("the node holding the tunnel cannot be reached")

// unreachableRetryAfter is the Retry-After of an unreachable holder: its
// lease lapses within seconds if it died, and its agent moves.
const unreachableRetryAfter = 5

// errUnavailable means the cluster could not be asked who holds a tunnel.
var errUnavailable = errors.New("cluster store unavailable")

// done reports whether an answer ends the search: a stream, or an agent's
// refusal; not "no tunnel here" or "every tunnel here is busy".
func done(err error) bool {
	var pe *protocol.Error
	switch {
	case err == nil:
		return true
	case errors.As(err, &pe):
		return pe.Reason != protocol.AgentBusy
	}
	return false
}

func refusal(err error) *protocol.Error {
	var pe *protocol.Error
	if err == nil || !errors.As(err, &pe) {
		return nil
	}
	return pe
}

// local asks through this node's sessions.
func (r *Router) local(ctx context.Context, cands []*broker.Session, req protocol.Request, timeout time.Duration) (Stream, protocol.Result, error) {
	st, res, err := r.broker.AskOn(ctx, cands, req, timeout)
	if err != nil {
		return nil, res, err
	}
	return st, res, nil
}

// forward tries the live holders in turn. When every one it tried was
// unreachable, it asks once more, since the list may be older than the
// tunnel an agent opened elsewhere when its node went away (a rolling
// restart), and tries the nodes that are new to it.
func (r *Router) forward(ctx context.Context, connID string, req protocol.Request, timeout time.Duration) (Stream, protocol.Result, error) {
	live, _, err := r.remote.Holders(ctx, connID)
	if err != nil {
		return nil, protocol.Result{}, errUnavailable
	}
	st, res, err := r.tryNodes(ctx, live, connID, req, timeout, false)
	if !errors.Is(err, errUnreachable) {
		return st, res, err
	}
	again, _, aerr := r.remote.Holders(ctx, connID)
	if aerr != nil {
		return st, res, err
	}
	fresh := slices.DeleteFunc(again, func(node string) bool { return slices.Contains(live, node) })
	if len(fresh) == 0 {
		return st, res, err
	}
	st, res, ferr := r.tryNodes(ctx, fresh, connID, req, timeout, false)
	if ferr != nil && !done(ferr) {
		return st, res, err // still the unreachable holders' error
	}
	return st, res, ferr
}

// lastResort tries the nodes whose tunnels were told to go away.
func (r *Router) lastResort(ctx context.Context, connID string, req protocol.Request, timeout time.Duration) (Stream, protocol.Result, error) {
	live, draining, err := r.remote.Holders(ctx, connID)
	if err != nil {
		return nil, protocol.Result{}, errUnavailable
	}
	return r.tryNodes(ctx, append(live, draining...), connID, req, timeout, true)
}

func (r *Router) tryNodes(ctx context.Context, nodes []string, connID string, req protocol.Request, timeout time.Duration, lastResort bool) (Stream, protocol.Result, error) {
	var (
		res         protocol.Result
		unreachable []string
	)
	err := broker.ErrNoTunnel
	for _, node := range nodes {
		var st Stream
		st, res, err = r.remote.Forward(ctx, node, connID, req, timeout, lastResort)
		if err == nil || !r.remote.Skip(err) {
			return st, res, err
		}
		if r.remote.Unreachable(err) {
			unreachable = append(unreachable, node)
		}
	}
	if len(unreachable) > 0 {
		return nil, res, fmt.Errorf("%w: %s", errUnreachable, strings.Join(unreachable, ", "))
	}
	return nil, res, err
}
