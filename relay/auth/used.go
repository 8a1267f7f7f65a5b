package auth

import (
	"context"
	"sync"
	"time"

	"github.com/postern/postern/relay/store"
)

// UseRecordInterval is how often, at most, a node writes that an API key
// was used: last_used_at is exact to within it, and a busy key costs one
// store write per interval, not one per request.
const UseRecordInterval = time.Minute

// UseFlushInterval is how often RecordUses writes the uses noted since its
// last round. No request waits for these writes.
const UseFlushInterval = 5 * time.Second

// useFlushTimeout bounds one round of writes, the last one at shutdown too.
const useFlushTimeout = 10 * time.Second

// uses remembers when each key's use was last noted by this node, and the
// uses noted but not yet written. Only keys that were accepted enter it,
// and keys are made by admins, so it stays as small as the key table.
type uses struct {
	mu      sync.Mutex
	noted   map[string]time.Time
	pending map[string]time.Time
}

// used notes that key k was accepted at now, unless this node did so less
// than UseRecordInterval ago. RecordUses writes it.
func (a *Authenticator) used(k store.APIKey, now time.Time) {
	u := &a.uses
	u.mu.Lock()
	defer u.mu.Unlock()
	if last, seen := u.noted[k.ID]; seen && now.Sub(last) < UseRecordInterval {
		return
	}
	if u.noted == nil {
		u.noted, u.pending = map[string]time.Time{}, map[string]time.Time{}
	}
	u.noted[k.ID] = now
	u.pending[k.ID] = now
}

// RecordUses writes the keys' last_used_at every UseFlushInterval until
// ctx ends, then writes what is left once more. The caller owns the
// goroutine it runs in.
func (a *Authenticator) RecordUses(ctx context.Context) {
	t := time.NewTicker(UseFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.FlushUses(context.WithoutCancel(ctx))
			return
		case <-t.C:
			a.FlushUses(ctx)
		}
	}
}

// FlushUses writes the uses noted since the last call; a listing of keys
// calls it so that it shows this node's latest uses. A store that fails
// is logged; the use is not retried (the next one writes a later time).
func (a *Authenticator) FlushUses(ctx context.Context) {
	u := &a.uses
	u.mu.Lock()
	pending := u.pending
	if len(pending) == 0 {
		u.mu.Unlock()
		return
	}
	u.pending = map[string]time.Time{} // the writes below own pending alone
	u.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, useFlushTimeout)
	defer cancel()
	for id, at := range pending {
		if err := a.store.MarkAPIKeyUsed(ctx, id, at.UTC()); err != nil {
			a.log.Warn("record the use of an api key", "key", id, "err", err)
		}
	}
}
