// Package fakeclock is a clock that tests move by hand, for relay code that
// takes the time from a func() time.Time (the rate limiter, the auth
// guard). Only tests use it.
package fakeclock

import (
	"sync"
	"time"
)

// Clock stands still until Advance moves it. It is safe for concurrent
// use: the code under test reads it from its own goroutines.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock at a fixed time, so a test reads the same on every
// run.
func New() *Clock {
	return &Clock{t: time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time; pass c.Now where a func() time.Time is
// wanted.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
