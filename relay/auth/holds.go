package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/postern/postern/relay/store"
)

// ErrKeyEnded is the cause of a held context that ended because its API
// key was revoked, or expired.
var ErrKeyEnded = errors.New("api key revoked or expired")

// holds are the streams open under each API key — CONNECT tunnels,
// forwarded requests, event streams — so that a key's revocation ends
// them at once, and its expiry when it comes. A stream is held from the
// moment its key was checked until it ends.
type holds struct {
	mu    sync.Mutex
	byKey map[string]map[*hold]struct{}
	// cut remembers for a while the keys cut here, so that a stream
	// whose key was checked just before its revocation, and held just
	// after the cut, ends too.
	cut map[string]time.Time
}

// cutMemory is how long a cut key is remembered: far longer than between
// a key's check and its stream's hold.
const cutMemory = time.Minute

// hold is one held stream: ending its context ends the stream.
type hold struct{ end context.CancelCauseFunc }

// Hold returns a context for a stream opened with key k: it ends with
// parent, when k expires, or when CutKey(k.ID) is called, with cause
// ErrKeyEnded for the last two. release must be called when the stream
// ends; it also ends the context.
func (a *Authenticator) Hold(parent context.Context, k store.APIKey) (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(parent)
	if k.ExpiresAt != nil {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, *k.ExpiresAt, ErrKeyEnded)
		inner := cancel
		cancel = func(cause error) { inner(cause); stop() }
	}
	held := &hold{end: cancel}
	h := &a.holds
	h.mu.Lock()
	if h.byKey == nil {
		h.byKey = map[string]map[*hold]struct{}{}
	}
	if h.byKey[k.ID] == nil {
		h.byKey[k.ID] = map[*hold]struct{}{}
	}
	h.byKey[k.ID][held] = struct{}{}
	at, wasCut := h.cut[k.ID]
	wasCut = wasCut && time.Since(at) <= cutMemory
	h.mu.Unlock()
	if wasCut {
		cancel(ErrKeyEnded)
	}
	return ctx, func() {
		h.mu.Lock()
		delete(h.byKey[k.ID], held)
		if len(h.byKey[k.ID]) == 0 {
			delete(h.byKey, k.ID)
		}
		h.mu.Unlock()
		cancel(context.Canceled)
	}
}

// CutKey ends every stream held with key id on this node, forgets the
// key's cached record so the next request reads it from the store, and
// returns how many streams it ended.
func (a *Authenticator) CutKey(id string) int {
	a.cache.keys.forget(id)
	h := &a.holds
	h.mu.Lock()
	now := time.Now()
	for kid, at := range h.cut {
		if now.Sub(at) > cutMemory {
			delete(h.cut, kid)
		}
	}
	if h.cut == nil {
		h.cut = map[string]time.Time{}
	}
	h.cut[id] = now
	cancels := make([]context.CancelCauseFunc, 0, len(h.byKey[id]))
	for held := range h.byKey[id] {
		cancels = append(cancels, held.end)
	}
	h.mu.Unlock()
	for _, cancel := range cancels {
		cancel(ErrKeyEnded)
	}
	return len(cancels)
}

// HeldKeys returns the ids of the keys with streams open on this node.
func (a *Authenticator) HeldKeys() []string {
	h := &a.holds
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.byKey))
	for id := range h.byKey {
		ids = append(ids, id)
	}
	return ids
}
