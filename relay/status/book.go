package status

import (
	"context"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Book keeps what a connection's status is computed from beyond this
// node's live sessions — the sessions on other nodes, refused agent
// tokens, the state last published, the recent tunnel transitions — and
// publishes transitions. A single node keeps it in memory
// (NewMemoryBook); a cluster keeps it in its shared store, so that every
// node answers alike and each transition is published once.
type Book interface {
	// Views lists a connection's sessions on every node.
	Views(ctx context.Context, connID string) ([]View, error)
	// Failure is the connection's last refused agent token.
	Failure(ctx context.Context, connID string) (store.Failure, error)
	// NoteFailure records a refused agent token; the failure's count
	// goes up when the previous refusal is less than within before at,
	// and starts over otherwise.
	NoteFailure(ctx context.Context, connID, msg string, at time.Time, within time.Duration) error
	// Track starts tracking c from the row given, before a change to it
	// is made, so that the change has a "from": the status j gives now
	// is taken as published, without an event. A connection already
	// tracked only takes the row's news.
	Track(ctx context.Context, c store.Connection, j Judge) error
	// Publish recomputes a tracked connection's status with j and
	// publishes what changed since the last publication (j.Next); fresh,
	// when not nil, is a newer read of the connection's row (an
	// untracked connection with a fresh row starts being tracked, as with
	// Track).
	Publish(ctx context.Context, connID string, fresh *store.Connection, j Judge) error
	// Published is the state last published for a connection, as far as
	// this node knows.
	Published(connID string) (store.PublishedState, bool)
	// Tracked lists the connections whose status the clock may change:
	// a Health overdue, an auth failure ageing out, a session lapsing, a
	// flapping tunnel settling.
	Tracked() []string
	// Forget drops what this node keeps of a deleted connection (what a
	// cluster shares went with the connection's rows in the store).
	Forget(connID string)
}

// Judge is one recomputation of connections' statuses at one moment: how
// a status is computed, and which events a change of it makes. The keeper
// gives the books one per recomputation.
type Judge struct {
	// Now is the moment of the recomputation and of its events.
	Now     time.Time
	node    string
	flap    FlapPolicy
	compute func(c store.Connection, views []View, f store.Failure) api.Status
	// announce takes one of a connection's allowlist events from its
	// budget; false holds the change back. Nil announces every change.
	announce func(connID string) bool
}

// Status is the status of connection c from the sessions on every node
// and its last refused agent token, as the sessions give it: a flapping
// tunnel is whatever it is at this moment.
func (j Judge) Status(c store.Connection, views []View, f store.Failure) api.Status {
	return j.compute(c, views, f)
}

// StateOf is the part of a status that events report.
func StateOf(st api.Status) store.PublishedState {
	return store.PublishedState{Tunnel: st.TunnelStatus, Auth: st.AuthStatus, Allowlist: st.AllowlistStatus,
		Duplicate: HasWarning(st, api.WarningDuplicateAgent)}
}

// Next is the state to publish after prev, now that c's status is st, and
// the events of the change, in the order tunnel, auth, allowlist, each
// carrying st's reason and the node's id. recent are c's newest tunnel
// events before this change, oldest first (its history, from which
// flapping is told; see FlapPolicy).
func (j Judge) Next(c store.Connection, prev store.PublishedState, st api.Status, recent []api.Event) (store.PublishedState, []api.Event) {
	st = seenBefore(prev, st)
	next := StateOf(st)
	var out []api.Event
	for _, ch := range []struct{ typ, from, to string }{
		{api.EventTunnel, prev.Tunnel, next.Tunnel},
		{api.EventAuth, prev.Auth, next.Auth},
		{api.EventAllowlist, prev.Allowlist, next.Allowlist},
	} {
		if ch.from == ch.to {
			continue
		}
		if ch.typ == api.EventAllowlist && j.announce != nil && !j.announce(c.ID) {
			// Over the connection's budget: the change stays unannounced,
			// and a later recomputation announces where it has got to.
			next.Allowlist = prev.Allowlist
			continue
		}
		out = append(out, j.event(c, st, ch.typ, ch.from, ch.to))
	}
	if prev.Duplicate != next.Duplicate {
		from, to := "", api.WarningDuplicateAgent
		if prev.Duplicate {
			from, to = to, from
		}
		out = append(out, j.event(c, st, api.EventWarning, from, to))
	}
	next.Flapping, out = j.flap.apply(prev, next, out, recent, j.Now, func(from, to string) api.Event {
		return j.event(c, st, api.EventTunnel, from, to)
	})
	return next, out
}

func (j Judge) event(c store.Connection, st api.Status, typ, from, to string) api.Event {
	return api.Event{
		Type: typ, ConnectionID: c.ID, Workspace: c.Workspace, Time: j.Now.UTC(), Node: j.node,
		From: from, To: to, Reason: st.Reason, ProviderErrorCode: st.ProviderErrorCode,
	}
}

// seenBefore keeps a connection once published with a tunnel from going
// back to never_connected: a publication that read the connection's row
// before its first tunnel was recorded there (a tunnel that ended within
// milliseconds of its start) says disconnected, AGENT_OFFLINE.
func seenBefore(prev store.PublishedState, st api.Status) api.Status {
	if st.TunnelStatus != TunnelNeverConnected || !flapStates[prev.Tunnel] {
		return st
	}
	st.TunnelStatus = TunnelDisconnected
	if st.Reason == protocol.AgentNeverConnected {
		st.Reason = protocol.AgentOffline
		st.ProviderErrorCode = st.Reason.Info().ProviderErrorCode
	}
	return st
}
