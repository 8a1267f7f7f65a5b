package auth

import (
	"sync"
	"time"

	"github.com/postern/postern/relay/store"
)

// RecordTTL is how long this node answers from memory the stored record of
// an API key or a connection it looked up, instead of asking the store on
// every CONNECT. Revocation does not wait for it: revoking a key or a
// connection forgets its record here at once, and on every node of a
// cluster as the announcement arrives (see CutKey, ForgetConnection). What
// it delays, by at most RecordTTL, is a change no announcement carries
// (a key deleted behind the relay's back in the store).
const RecordTTL = 10 * time.Second

// maxRecords bounds each cache. Only records the store returned enter it,
// and those are made by admins, so the bound is a safety net: a full cache
// is emptied and refills from the store.
const maxRecords = 10000

// records caches store records by id for RecordTTL.
//
// A lookup that started before an id was forgotten must not put back what
// it read: the store may have answered before the revocation. gen counts
// forgets, and put keeps a record only if no forget happened since the
// lookup took its gen.
type records[T any] struct {
	mu   sync.Mutex
	gen  uint64
	byID map[string]record[T]
}

type record[T any] struct {
	v  T
	at time.Time
}

// get returns the record of id read within RecordTTL of now, and the
// generation a lookup from the store must hand to put.
func (c *records[T]) get(id string, now time.Time) (v T, ok bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.byID[id]
	if ok && now.Sub(r.at) < RecordTTL && !now.Before(r.at) {
		return r.v, true, c.gen
	}
	return v, false, c.gen
}

// put keeps v as id's record read at now, unless something was forgotten
// since gen was taken.
func (c *records[T]) put(id string, v T, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.byID == nil || len(c.byID) >= maxRecords {
		c.byID = make(map[string]record[T])
	}
	c.byID[id] = record[T]{v: v, at: now}
}

// forget drops id's record and makes every lookup in flight discard what
// it read.
func (c *records[T]) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.byID, id)
}

// cache holds the records the CONNECT path reads on every request.
type cache struct {
	keys  records[store.APIKey]
	conns records[store.Connection]
}

// ForgetConnection drops connection id's record, so the next request reads
// it from the store: call it when the connection is revoked or deleted,
// here or (announced) on another node.
func (a *Authenticator) ForgetConnection(id string) { a.cache.conns.forget(id) }

// cached returns id's record from c, or loads it from the store and keeps
// it. Errors, not-found included, are never kept.
func cached[T any](c *records[T], id string, load func() (T, error)) (T, error) {
	now := time.Now()
	v, ok, gen := c.get(id, now)
	if ok {
		return v, nil
	}
	v, err := load()
	if err == nil {
		c.put(id, v, now, gen)
	}
	return v, err
}
