// Package ratelimit keeps token buckets per key in bounded memory: the
// relay's limits on refused credentials (per source address and per
// credential id) and on proxy requests per API key are built on it.
//
// Every table holds at most a fixed number of keys, evicting the least
// recently charged, and is swept a little on each use, so no goroutine is
// involved and memory stays flat under a flood of random keys. It knows
// nothing of HTTP or credentials: keys are opaque strings.
package ratelimit

import (
	"container/list"
	"math"
	"sync"
	"time"
)

// MaxKeys bounds each table of the relay: a bucket costs about 150 bytes,
// so a full table is some 15 MB.
const MaxKeys = 100_000

// SweepPerCall is how many stale entries one call may remove, so that a
// table empties as traffic passes without any call doing much work.
const SweepPerCall = 2

// LRU is a map bounded to max entries; the least recently touched entry
// is evicted to make room. It is not safe for concurrent use.
type LRU[V any] struct {
	max  int
	keys map[string]*list.Element
	lru  list.List // front = most recently touched; elements are *lruEntry[V]
}

type lruEntry[V any] struct {
	key string
	val V
}

// NewLRU returns an empty map of at most maxKeys entries.
func NewLRU[V any](maxKeys int) *LRU[V] {
	return &LRU[V]{max: maxKeys, keys: make(map[string]*list.Element)}
}

// Get returns the entry of key, if any, without touching it.
func (m *LRU[V]) Get(key string) (*V, bool) {
	el, ok := m.keys[key]
	if !ok {
		return nil, false
	}
	return &el.Value.(*lruEntry[V]).val, true
}

// Put stores val under key as the most recent entry and reports whether
// another entry was evicted to make room.
func (m *LRU[V]) Put(key string, val V) (evicted bool) {
	if el, ok := m.keys[key]; ok {
		el.Value.(*lruEntry[V]).val = val
		m.lru.MoveToFront(el)
		return false
	}
	if len(m.keys) >= m.max {
		m.Remove(m.lru.Back().Value.(*lruEntry[V]).key)
		evicted = true
	}
	m.keys[key] = m.lru.PushFront(&lruEntry[V]{key: key, val: val})
	return evicted
}

// Remove drops key.
func (m *LRU[V]) Remove(key string) {
	if el, ok := m.keys[key]; ok {
		m.lru.Remove(el)
		delete(m.keys, key)
	}
}

// Sweep removes up to n of the least recently touched entries for which
// stale is true, stopping at the first that is not.
func (m *LRU[V]) Sweep(n int, stale func(*V) bool) {
	for range n {
		el := m.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*lruEntry[V])
		if !stale(&e.val) {
			return
		}
		m.Remove(e.key)
	}
}

// Len is the number of entries.
func (m *LRU[V]) Len() int { return len(m.keys) }

// bucket is one token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// Limiter keeps a token bucket per key, at most maxKeys of them. A missing
// key is a full bucket, so an entry that has refilled is dropped. It is
// safe for concurrent use.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets *LRU[bucket]
}

// New allows burst events at once and refills at rate per second; now is
// the clock (time.Now when nil).
func New(rate float64, burst, maxKeys int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, burst: float64(burst), now: now, buckets: NewLRU[bucket](maxKeys)}
}

// PerWindow allows n events per window, all of them at once if need be.
func PerWindow(n int, window time.Duration, maxKeys int, now func() time.Time) *Limiter {
	return New(float64(n)/window.Seconds(), n, maxKeys, now)
}

// level is the bucket's content at now.
func (l *Limiter) level(b *bucket, now time.Time) float64 {
	return math.Min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
}

func (l *Limiter) levelLocked(key string, now time.Time) float64 {
	b, ok := l.buckets.Get(key)
	if !ok {
		return l.burst
	}
	return l.level(b, now)
}

// untilOne is how long a bucket at level needs to hold one whole token.
func (l *Limiter) untilOne(level float64) time.Duration {
	if level >= 1 {
		return 0
	}
	return time.Duration((1 - level) / l.rate * float64(time.Second))
}

// Wait returns how long key must wait for one token; 0 means one is there.
// It changes nothing.
func (l *Limiter) Wait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.untilOne(l.levelLocked(key, l.now()))
}

// Charged reports whether key has used any of its burst that has not
// refilled yet.
func (l *Limiter) Charged(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.levelLocked(key, l.now()) < l.burst
}

// Charge takes one token from key, never going below zero, and reports
// whether this charge emptied the bucket (the next event would wait).
func (l *Limiter) Charge(key string) (emptied bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	before := l.levelLocked(key, now)
	after := math.Max(0, before-1)
	l.store(key, after, now)
	return before >= 1 && after < 1
}

// Take takes one token from key if there is one; otherwise it returns how
// long to wait and takes nothing.
func (l *Limiter) Take(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lvl := l.levelLocked(key, now)
	if lvl < 1 {
		return l.untilOne(lvl), false
	}
	l.store(key, lvl-1, now)
	return 0, true
}

func (l *Limiter) store(key string, level float64, now time.Time) {
	l.buckets.Put(key, bucket{tokens: level, at: now})
	l.buckets.Sweep(SweepPerCall, func(b *bucket) bool { return l.level(b, now) >= l.burst })
}

// Size is the number of keys held.
func (l *Limiter) Size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}
