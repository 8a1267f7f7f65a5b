// Package backoff computes reconnect delays: exponential growth, a cap,
// and full jitter, so that a fleet of agents that lost the same relay
// does not come back in one wave.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields successive delays. The zero value is not usable; use New.
// It never gives up: after reaching Max it keeps returning jittered
// delays up to Max.
type Backoff struct {
	Base time.Duration
	Max  time.Duration

	attempt int
	rand    func(n int64) int64
}

// New returns a Backoff starting at base and capped at max.
func New(base, max time.Duration) *Backoff {
	return &Backoff{Base: base, Max: max, rand: rand.Int64N}
}

// Next returns the delay before the next attempt: uniform in
// [ceiling/2, ceiling], where ceiling doubles per attempt up to Max. The
// lower half-bound keeps a retry storm from collapsing to zero delays.
func (b *Backoff) Next() time.Duration {
	ceiling := b.Base
	for i := 0; i < b.attempt && ceiling < b.Max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.Max)
	if ceiling < b.Max {
		b.attempt++
	}
	half := ceiling / 2
	if half <= 0 {
		return ceiling
	}
	return half + time.Duration(b.rand(int64(ceiling-half)+1))
}

// Reset starts the sequence over, after a connection that worked.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for Next() or until ctx ends, and reports whether it slept
// the whole delay.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits d or until ctx ends, and reports whether it waited d: a
// pause the relay asked for is waited like a backoff delay.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Jitter returns d moved by up to a tenth either way, so that agents that
// pause alike do not all come back in the same second.
func Jitter(d time.Duration) time.Duration {
	spread := int64(d / 10)
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread) + time.Duration(rand.Int64N(2*spread+1))
}
