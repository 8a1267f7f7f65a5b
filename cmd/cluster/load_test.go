package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// outcome is one request of a load run: when it started, the node that
// took it and how it ended.
type outcome struct {
	at   time.Time
	node int
	err  error
}

// loadRun sends echo round trips of roundTripSize bytes, back to back
// from several workers, until stopped; each request goes to the node pick
// names, or the next one whose listener accepts, as a TCP load balancer
// would.
type loadRun struct {
	mu       sync.Mutex
	outcomes []outcome
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

const roundTripSize = 4 << 10

func (c *cluster) startLoad(workers int, connID, target string, pick func(n uint64) int) *loadRun {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadRun{cancel: cancel}
	var seq sync.Mutex
	var n uint64
	next := func() int {
		seq.Lock()
		defer seq.Unlock()
		n++
		return pick(n)
	}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				at := time.Now()
				node, err := c.roundTripAny(next(), connID, target)
				l.mu.Lock()
				l.outcomes = append(l.outcomes, outcome{at: at, node: node, err: err})
				l.mu.Unlock()
			}
		})
	}
	c.t.Cleanup(l.stop)
	return l
}

// roundTripAny runs one round trip through node first, or the next node
// whose proxy listener accepts a connection.
func (c *cluster) roundTripAny(first int, connID, target string) (int, error) {
	var err error
	for k := range c.nodes {
		i := (first + k) % len(c.nodes)
		err = c.roundTrip(i, connID, target, roundTripSize)
		if !refusedByListener(err) {
			return i, err
		}
	}
	return -1, fmt.Errorf("every listener refused: %w", err)
}

// refusedByListener tells a node that is not listening, which a load
// balancer skips, from a request that failed.
func refusedByListener(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED)
}

// stop ends the run and waits for the requests in flight.
func (l *loadRun) stop() {
	l.cancel()
	l.wg.Wait()
}

// failures returns the requests that started at or after from and
// failed, and how many started then in all.
func (l *loadRun) failures(from time.Time) (failed []outcome, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, o := range l.outcomes {
		if o.at.Before(from) {
			continue
		}
		total++
		if o.err != nil {
			failed = append(failed, o)
		}
	}
	return failed, total
}

// report logs the failed requests, at most ten.
func report(t *testing.T, failed []outcome) {
	t.Helper()
	for i, o := range failed {
		if i == 10 {
			t.Logf("... and %d more", len(failed)-10)
			return
		}
		t.Logf("failed at %s via node %d: %v", o.at.Format("15:04:05.000"), o.node, o.err)
	}
}
