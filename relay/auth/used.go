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

// uses remembers when each key's use was last written by this node. Only
// keys that were accepted enter it, and keys are made by admins, so it
// stays as small as the key table.
type uses struct {
	mu      sync.Mutex
	written map[string]time.Time
}

// used records that key k was accepted at now, unless this node did so
// less than UseRecordInterval ago. A store that fails is logged, and the
// key is still accepted.
func (a *Authenticator) used(ctx context.Context, k store.APIKey, now time.Time) {
	u := &a.uses
	u.mu.Lock()
	last, seen := u.written[k.ID]
	due := !seen || now.Sub(last) >= UseRecordInterval
	if due {
		if u.written == nil {
			u.written = map[string]time.Time{}
		}
		u.written[k.ID] = now
	}
	u.mu.Unlock()
	if !due {
		return
	}
	if err := a.store.MarkAPIKeyUsed(ctx, k.ID, now.UTC()); err != nil {
		a.log.Warn("record the use of an api key", "key", k.ID, "err", err)
	}
}
