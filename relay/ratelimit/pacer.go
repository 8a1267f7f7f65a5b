package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Pacer admits events, for a whole node, at a steady rate with a small
// burst, and gives each event it turns away a slot of its own to come
// back at. A crowd turned away together is told to come back spread over
// as many seconds as the rate needs, rather than all at once: after a
// relay restart every agent of the fleet dials within a second or two,
// and the node takes their handshakes at Rate while the rest wait their
// turn. It is safe for concurrent use.
type Pacer struct {
	mu       sync.Mutex
	interval time.Duration // between two admitted events at Rate
	burst    time.Duration // how far admissions may run ahead of the clock
	maxWait  time.Duration // the furthest slot handed out
	tat      time.Time     // when the next admission would be on schedule
	promised time.Time     // the latest slot handed to an event turned away
}

// NewPacer returns a Pacer admitting rate events a second, up to burst
// of them at once, that never asks an event to wait longer than maxWait.
// A rate of zero or less returns nil, which admits everything.
func NewPacer(rate float64, burst int, maxWait time.Duration) *Pacer {
	if rate <= 0 || math.IsInf(rate, 1) {
		return nil
	}
	interval := time.Duration(float64(time.Second) / rate)
	return &Pacer{interval: interval, burst: time.Duration(max(burst, 1)) * interval, maxWait: maxWait}
}

// Admit reports whether an event at now may go ahead. When it may not,
// wait is how long the event should stay away: each turned-away event is
// given the next free slot after those handed out before it.
func (p *Pacer) Admit(now time.Time) (ok bool, wait time.Duration) {
	if p == nil {
		return true, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tat.Before(now) {
		p.tat = now
	}
	// Up to burst admissions may be scheduled ahead of the clock.
	ahead := p.burst - p.interval
	if p.tat.Sub(now) <= ahead {
		p.tat = p.tat.Add(p.interval)
		return true, 0
	}
	return false, p.slotLocked(now, ahead)
}

// Defer turns an event away for a reason of the caller's (the node is
// busy) and returns how long it should stay away: the next free slot, as
// Admit would give.
func (p *Pacer) Defer(now time.Time) time.Duration {
	if p == nil {
		return time.Second
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slotLocked(now, p.burst-p.interval)
}

// slotLocked hands out the first free slot: when the schedule lets one
// more in, or the one after the last handed out.
func (p *Pacer) slotLocked(now time.Time, ahead time.Duration) time.Duration {
	slot := p.tat.Add(-ahead)
	if !slot.After(now) {
		slot = now.Add(p.interval)
	}
	if next := p.promised.Add(p.interval); next.After(slot) {
		slot = next
	}
	if slot.Sub(now) > p.maxWait {
		slot = now.Add(p.maxWait)
	}
	p.promised = slot
	return slot.Sub(now)
}
