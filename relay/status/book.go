package status

import (
	"context"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Compute is the status of connection c from the sessions on every node
// and its last refused agent token.
type Compute func(c store.Connection, views []View, f store.Failure) api.Status

// Book keeps what a connection's status is computed from beyond this
// node's live sessions — the sessions on other nodes, refused agent
// tokens, the state last published — and publishes transitions. A single
// node keeps it in memory (NewMemoryBook); a cluster keeps it in its
// shared store, so that every node answers alike and each transition is
// published once.
type Book interface {
	// Views lists a connection's sessions on every node.
	Views(ctx context.Context, connID string) ([]View, error)
	// Failure is the connection's last refused agent token.
	Failure(ctx context.Context, connID string) (store.Failure, error)
	// NoteFailure records a refused agent token.
	NoteFailure(ctx context.Context, connID, msg string, at time.Time) error
	// Track starts tracking c from the row given, before a change to it
	// is made, so that the change has a "from": the status compute gives
	// now is taken as published, without an event. A connection already
	// tracked only takes the row's news.
	Track(ctx context.Context, c store.Connection, now time.Time, compute Compute) error
	// Publish recomputes a tracked connection's status and publishes
	// what changed since the last publication; fresh, when not nil, is a
	// newer read of the connection's row (an untracked connection with a
	// fresh row starts being tracked, as with Track).
	Publish(ctx context.Context, connID string, fresh *store.Connection, now time.Time, compute Compute) error
	// Published is the state last published for a connection, as far as
	// this node knows.
	Published(connID string) (store.PublishedState, bool)
	// Tracked lists the connections whose status the clock may change:
	// a Health overdue, an auth failure ageing out, a session lapsing.
	Tracked() []string
}

// stateOf is the part of a status that events report.
func stateOf(st api.Status) store.PublishedState {
	return store.PublishedState{Tunnel: st.TunnelStatus, Auth: st.AuthStatus, Allowlist: st.AllowlistStatus}
}

// Transitions lists the events from prev to the status st of c, in the
// order tunnel, auth, allowlist; the events carry st's reason.
func Transitions(c store.Connection, prev store.PublishedState, st api.Status, now time.Time) []api.Event {
	next := stateOf(st)
	var out []api.Event
	for _, ch := range []struct{ typ, from, to string }{
		{api.EventTunnel, prev.Tunnel, next.Tunnel},
		{api.EventAuth, prev.Auth, next.Auth},
		{api.EventAllowlist, prev.Allowlist, next.Allowlist},
	} {
		if ch.from == ch.to {
			continue
		}
		out = append(out, api.Event{
			Type: ch.typ, ConnectionID: c.ID, Workspace: c.Workspace, Time: now.UTC(),
			From: ch.from, To: ch.to, Reason: st.Reason, ProviderErrorCode: st.ProviderErrorCode,
		})
	}
	return out
}
