package history

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Bounds of a history read.
const (
	// DefaultLimit is how many transitions a read returns unless asked.
	DefaultLimit = 100
	// MaxLimit is the most one read returns.
	MaxLimit = 1000
	// uptimeReadLimit bounds the transitions uptime is computed from; a
	// connection that changed more often in a week is counted from the
	// state before the oldest of them.
	uptimeReadLimit = 20_000
)

// Uptime periods.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
)

// Query is what a history read asks for: the newest Limit transitions at
// or after Since.
type Query struct {
	Since time.Time
	Limit int
}

// Reader reads connections' histories from the store.
type Reader struct{ st store.Store }

// NewReader returns a reader of st's history.
func NewReader(st store.Store) *Reader { return &Reader{st: st} }

// Read returns c's transitions that q asks for, with how long each state
// lasted, and c's uptime. tunnel is c's tunnel_status now.
func (r *Reader) Read(ctx context.Context, c store.Connection, q Query, tunnel string, now time.Time) (api.History, error) {
	recs, err := r.st.ConnectionHistory(ctx, c.ID, q.Since, q.Limit+1) // one more tells truncation
	if err != nil {
		return api.History{}, err
	}
	truncated := len(recs) > q.Limit
	if truncated {
		recs = recs[1:]
	}
	up, err := r.Uptime(ctx, c, tunnel, now)
	if err != nil {
		return api.History{}, err
	}
	return api.History{ConnectionID: c.ID, Transitions: Entries(decode(recs), now), Truncated: truncated, Uptime: up}, nil
}

// Uptime is c's uptime over the last day and week at now; tunnel is its
// tunnel_status now.
func (r *Reader) Uptime(ctx context.Context, c store.Connection, tunnel string, now time.Time) (api.Uptime, error) {
	since := now.Add(-Week)
	recs, err := r.st.ConnectionHistory(ctx, c.ID, since, uptimeReadLimit)
	if err != nil {
		return api.Uptime{}, err
	}
	evs := decode(recs)
	return api.Uptime{
		Day:   Ratio(evs, tunnel, later(now.Add(-Day), c.CreatedAt), now),
		Week:  Ratio(evs, tunnel, later(since, c.CreatedAt), now),
		Since: later(since, c.CreatedAt).UTC(),
	}, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// decode turns stored records into events numbered by the history's ids;
// a record that does not decode is left out.
func decode(recs []store.EventRecord) []api.Event {
	out := make([]api.Event, 0, len(recs))
	for _, rec := range recs {
		var e api.Event
		if json.Unmarshal(rec.Body, &e) != nil {
			continue
		}
		e.ID = strconv.FormatInt(rec.ID, 10)
		if e.Time.IsZero() {
			e.Time = rec.At
		}
		out = append(out, e)
	}
	return out
}

// flapping is the tunnel_status of a flapping connection (package
// status's word, which this package only reads).
const flapping = "flapping"

// chain names the sequence an event belongs to, within which one event's
// state lasts until the next: each kind of transition, with the tunnel's
// flapping announcements a sequence of their own beside the tunnel's
// moves.
func chain(e api.Event) string {
	if e.Type == api.EventTunnel && (e.From == flapping || e.To == flapping) {
		return "flapping"
	}
	return e.Type
}

// Entries are evs, oldest first, with how long each one's state lasted:
// until the next event of its chain, or until now for the newest, which
// is ongoing.
func Entries(evs []api.Event, now time.Time) []api.HistoryEntry {
	out := make([]api.HistoryEntry, len(evs))
	next := map[string]time.Time{}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		out[i] = api.HistoryEntry{Event: e}
		end, seen := next[chain(e)]
		if !seen {
			end, out[i].Ongoing = now, true
		}
		out[i].DurationSeconds = max(end.Sub(e.Time).Seconds(), 0)
		next[chain(e)] = e.Time
	}
	return out
}

// up reports whether a tunnel_status counts as up.
func up(tunnel string) bool { return tunnel == "connected" || tunnel == "degraded" }

// Ratio is the share of [start, now] that the tunnel was up, from its
// moves in evs (oldest first; other events are ignored) and its state
// now. Before the first move in the period the tunnel was in that move's
// "from" state; without a move in the period, in its state now.
func Ratio(evs []api.Event, tunnel string, start, now time.Time) float64 {
	var moves []api.Event
	for _, e := range evs {
		if chain(e) == api.EventTunnel && e.Time.After(start) && !e.Time.After(now) {
			moves = append(moves, e)
		}
	}
	state := tunnel
	if len(moves) > 0 {
		state = moves[0].From
	}
	span := now.Sub(start)
	if span <= 0 {
		if up(state) {
			return 1
		}
		return 0
	}
	var upFor time.Duration
	at := start
	for _, m := range moves {
		if up(state) {
			upFor += m.Time.Sub(at)
		}
		state, at = m.To, m.Time
	}
	if up(state) {
		upFor += now.Sub(at)
	}
	return float64(upFor) / float64(span)
}
