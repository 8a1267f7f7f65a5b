package history

import (
	"context"
	"log/slog"
	"time"

	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/store"
)

// DefaultRetention is how long transitions are kept.
const DefaultRetention = 30 * 24 * time.Hour

// pruneEvery is how often the history is pruned; the first pruning runs
// a minute after start, out of the way of a node's start-up.
const (
	pruneEvery = time.Hour
	pruneFirst = time.Minute
)

// Pruner deletes transitions older than the retention, keeping each
// connection's newest transition of each kind (see store.PruneEvents).
// Every node of a cluster runs one; the store lets one prune at a time.
type Pruner struct {
	st        store.Store
	retention time.Duration
	log       *slog.Logger
}

// NewPruner returns a pruner of st's history.
func NewPruner(st store.Store, retention time.Duration, log *slog.Logger) *Pruner {
	return &Pruner{st: st, retention: retention, log: log}
}

// Run prunes a minute after it starts and then every hour until ctx ends.
func (p *Pruner) Run(ctx context.Context) {
	if !tick.Sleep(ctx, pruneFirst) {
		return
	}
	p.Prune(ctx, time.Now())
	tick.Every(ctx, pruneEvery, func(now time.Time) { p.Prune(ctx, now) })
}

// Prune deletes what is older than the retention at now.
func (p *Pruner) Prune(ctx context.Context, now time.Time) {
	n, err := p.st.PruneEvents(ctx, now.Add(-p.retention))
	switch {
	case err != nil && ctx.Err() == nil:
		p.log.Warn("connection history: prune", "err", err)
	case n > 0:
		p.log.Info("connection history pruned", "transitions_deleted", n, "older_than", now.Add(-p.retention).UTC())
	}
}
