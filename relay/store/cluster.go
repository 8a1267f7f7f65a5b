package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrStale means a presence write lost to a newer one (a higher sequence
// number, or the session's tombstone) and changed nothing.
var ErrStale = errors.New("stale presence write")

// Node is one relay node of a cluster as its peers see it.
type Node struct {
	ID string
	// PeerURL is where other nodes open their peer links to this one
	// (ws:// or wss://, as given by --peer-advertise).
	PeerURL string
	// Draining is set from the start of a graceful stop: the node takes
	// no new work and its agents are moving elsewhere.
	Draining  bool
	StartedAt time.Time
	// RenewedAt is the last renewal of the lease, which lasts until
	// LeaseUntil.
	RenewedAt  time.Time
	LeaseUntil time.Time
	// Sessions counts the node's open agent sessions (filled by Nodes).
	Sessions int
}

// Presence is one live agent session on some node, as the cluster shares
// it. Seq orders the writes about one session: a write with a lower
// sequence number than the stored one changes nothing, and a closed
// session's tombstone is never reopened, whatever order writes arrive in.
type Presence struct {
	SessionID    string
	ConnectionID string
	NodeID       string
	TokenID      string
	Seq          int64
	Draining     bool
	// View is what the status shows of the session (its Hello, newest
	// Health, heartbeat, streams), encoded by the cluster code.
	View       json.RawMessage
	LeaseUntil time.Time
}

// Failure is the last refused agent token of a connection.
type Failure struct {
	At time.Time
	// Count is how many refusals in a row came each within the window
	// NoteFailure was given of the one before; an older one started over.
	Count   int64
	Message string
}

// PublishedState is the tunnel, auth and allowlist status last published
// for a connection. Tunnel is the state the sessions give, even while
// Flapping: then its changes are recorded but not announced one by one.
type PublishedState struct {
	Tunnel, Auth, Allowlist string
	Flapping                bool
	// Duplicate is set while the status carries a DUPLICATE_AGENT warning.
	Duplicate bool
}

// RecentTunnelEvents is how many of a connection's newest tunnel events
// a Snapshot carries, for telling flapping.
const RecentTunnelEvents = 64

// Snapshot is what one connection's status is computed from, read in one
// transaction.
type Snapshot struct {
	Connection Connection
	// Prev is the state published last; Known is false before the first.
	Prev  PublishedState
	Known bool
	// Presence lists the open, unexpired sessions on every node.
	Presence []Presence
	Failure  Failure
	// Recent are the connection's newest events of type "tunnel", up to
	// RecentTunnelEvents, oldest first.
	Recent []EventRecord
}

// EventRecord is one published status event: its id (cluster-ordered in
// a cluster, in publication order on a single node), when it happened,
// and its body (the JSON of api.Event without the id). The same records
// are a connection's history.
type EventRecord struct {
	ID           int64
	ConnectionID string
	Workspace    string
	// At is when the transition happened; zero means "now" to the store
	// that writes it.
	At   time.Time
	Body json.RawMessage
	// Receivers are the webhooks owed this event (Publish only).
	Receivers []string
}

// Delivery is one event owed to one webhook receiver.
type Delivery struct {
	EventID  int64
	Receiver string
	Attempts int
	Body     json.RawMessage
}

// Cluster is the shared state of a cluster of relay nodes: who is up,
// which agent sessions live where, the status published for each
// connection, the event log, webhook deliveries, and notifications between
// nodes. Only a store that several processes share (PostgreSQL) offers
// it; a single node keeps all of this in memory.
type Cluster interface {
	// UpsertNode registers or renews a node.
	UpsertNode(ctx context.Context, n Node) error
	// RemoveNode drops a node and every session it held.
	RemoveNode(ctx context.Context, id string) error
	// Nodes lists the nodes whose lease has not lapsed, by id.
	Nodes(ctx context.Context, now time.Time) ([]Node, error)

	// PutPresence stores p unless a newer write or its tombstone is
	// already there (ErrStale).
	PutPresence(ctx context.Context, p Presence) error
	// PutPresences stores many in one round trip; stale ones are skipped.
	PutPresences(ctx context.Context, ps []Presence) error
	// ClosePresence leaves a tombstone for p's session at p.Seq, written
	// even if the session's own row never arrived.
	ClosePresence(ctx context.Context, p Presence) error
	// RenewPresence extends the lease of every open session of a node.
	RenewPresence(ctx context.Context, nodeID string, until time.Time) error
	// PresenceOf lists the open, unexpired sessions of a connection.
	PresenceOf(ctx context.Context, connectionID string, now time.Time) ([]Presence, error)
	// ExpirePresence drops the sessions and nodes whose lease lapsed
	// before now, and tombstones older than keep; it returns the
	// connections whose live sessions it dropped. (Events are history,
	// pruned by Store.PruneEvents.)
	ExpirePresence(ctx context.Context, now time.Time, keep time.Duration) ([]string, error)

	// NoteFailure records a refused agent token against a connection:
	// the count goes up when the previous refusal is less than within
	// before at, and starts over at 1 otherwise.
	NoteFailure(ctx context.Context, connectionID, message string, at time.Time, within time.Duration) error
	// LastFailure returns a connection's last refused agent token; a zero
	// At means none.
	LastFailure(ctx context.Context, connectionID string) (Failure, error)

	// Publish runs fn with a snapshot of a connection taken under a lock
	// that serializes every publisher of that connection in the cluster,
	// and stores the state fn returns together with the events it
	// returns, with cluster-ordered ids, and the webhook deliveries owed
	// for them. It returns the stored events.
	Publish(ctx context.Context, connectionID string, now time.Time,
		fn func(Snapshot) (PublishedState, []EventRecord, error)) ([]EventRecord, error)
	// Watched lists the connections with a published state.
	Watched(ctx context.Context) ([]string, error)
	// EventsAfter returns up to limit events with an id above after, in
	// order; the first id kept is returned too, to tell a gap.
	EventsAfter(ctx context.Context, after int64, limit int) (events []EventRecord, firstKept int64, err error)
	// NewestEvent is the id of the newest event kept, 0 when none is.
	NewestEvent(ctx context.Context) (int64, error)

	// ClaimDeliveries takes up to limit due deliveries to the receivers
	// named, for this node until until; no other node gets them
	// meanwhile.
	ClaimDeliveries(ctx context.Context, receivers []string, limit int, until time.Time) ([]Delivery, error)
	// FinishDelivery marks a delivery done, or schedules its next attempt.
	FinishDelivery(ctx context.Context, d Delivery, done bool, next time.Time) error

	// Notify sends payload to every node listening on channel.
	Notify(ctx context.Context, channel, payload string) error
	// Listen delivers notifications on channels until ctx ends or the
	// database connection fails; the caller listens again after an error.
	// ready is called once the channels are listened to.
	Listen(ctx context.Context, channels []string, ready func(), fn func(channel, payload string)) error
}
