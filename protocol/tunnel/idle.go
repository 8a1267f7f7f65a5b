package tunnel

import (
	"sync"
	"sync/atomic"
	"time"
)

// activity fires onIdle once when touch has not been called for d.
type activity struct {
	d      time.Duration
	last   atomic.Int64
	timer  *time.Timer
	fired  atomic.Bool
	mu     sync.Mutex
	onIdle func()
}

func newActivity(d time.Duration, onIdle func()) *activity {
	a := &activity{d: d, onIdle: onIdle}
	if d <= 0 {
		return a
	}
	a.last.Store(time.Now().UnixNano())
	a.mu.Lock()
	a.timer = time.AfterFunc(d, a.check)
	a.mu.Unlock()
	return a
}

func (a *activity) touch() {
	if a.d > 0 {
		a.last.Store(time.Now().UnixNano())
	}
}

func (a *activity) check() {
	idle := time.Since(time.Unix(0, a.last.Load()))
	if idle >= a.d {
		a.fired.Store(true)
		a.onIdle()
		return
	}
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Reset(a.d - idle)
	}
	a.mu.Unlock()
}

func (a *activity) stop() {
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.mu.Unlock()
}

func (a *activity) expired() bool { return a.fired.Load() }
