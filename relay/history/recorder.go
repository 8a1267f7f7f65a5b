package history

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Recorder limits.
const (
	// QueueSize is how many transitions may wait for the store; one more
	// is dropped and counted.
	QueueSize = 4096
	// maxBatch bounds one write.
	maxBatch = 256
	// writeTimeout bounds one write, and the final flush on stop.
	writeTimeout = 5 * time.Second
)

// Recorder writes a single node's transitions to the store in the order
// offered. Offer never blocks; Run, owned by the relay, does the writing.
type Recorder struct {
	st      store.Store
	log     *slog.Logger
	queue   chan api.Event
	dropped prometheus.Counter
}

// NewRecorder returns a recorder writing to st; its drop counter,
// postern_relay_history_dropped_total, goes to reg.
func NewRecorder(st store.Store, log *slog.Logger, reg prometheus.Registerer) *Recorder {
	r := &Recorder{st: st, log: log, queue: make(chan api.Event, QueueSize),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_relay_history_dropped_total",
			Help: "Status transitions left out of the connection history: the write queue was full or the store refused the write.",
		})}
	reg.MustRegister(r.dropped)
	return r
}

// Offer queues e for the history, or drops and counts it when the queue
// is full.
func (r *Recorder) Offer(e api.Event) {
	select {
	case r.queue <- e:
	default:
		r.dropped.Inc()
	}
}

// Run writes what is offered until ctx ends, then writes what is still
// queued (within writeTimeout) and returns.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case e := <-r.queue:
			r.write(ctx, r.batch(e))
		case <-ctx.Done():
			r.flush()
			return
		}
	}
}

// batch is first and what else is queued, up to maxBatch.
func (r *Recorder) batch(first api.Event) []api.Event {
	out := []api.Event{first}
	for len(out) < maxBatch {
		select {
		case e := <-r.queue:
			out = append(out, e)
		default:
			return out
		}
	}
	return out
}

// flush writes what is queued when the relay stops: the last transitions
// (the tunnels the stop closed) belong in the history too.
func (r *Recorder) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	for {
		select {
		case e := <-r.queue:
			r.write(ctx, r.batch(e))
		default:
			return
		}
	}
}

func (r *Recorder) write(ctx context.Context, evs []api.Event) {
	recs := make([]store.EventRecord, 0, len(evs))
	for _, e := range evs {
		e.ID = "" // the history numbers its own records
		body, err := json.Marshal(e)
		if err != nil {
			r.dropped.Inc()
			continue
		}
		recs = append(recs, store.EventRecord{ConnectionID: e.ConnectionID, Workspace: e.Workspace, At: e.Time, Body: body})
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := r.st.AppendEvents(wctx, recs); err != nil {
		r.dropped.Add(float64(len(recs)))
		r.log.Warn("connection history: transitions not recorded", "count", len(recs), "err", err)
	}
}
