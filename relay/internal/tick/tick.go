// Package tick runs the relay's periodic work and its waits, each ended by
// a context: the owner of the goroutine cancels it and the loop returns.
package tick

import (
	"context"
	"time"
)

// Every calls fn with the time of each tick, every period, until ctx
// ends. fn runs on the caller's goroutine; a slow fn delays the next tick
// rather than piling calls up.
func Every(ctx context.Context, period time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}

// Sleep waits d, or less when ctx ends first; it reports whether it
// waited all of d.
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
