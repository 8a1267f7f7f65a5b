package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
)

// outcome is one request of a load run: when it started, the node that
// took it and how it ended.
type outcome struct {
	at   time.Time
	node int
	err  error
}

// loadRun sends echo round trips of roundTripSize bytes, back to back
// from several workers, until stopped. It plays a TCP load balancer in
// front of the nodes: a health check polls each node's /readyz every
// healthEvery and takes an unready node out of rotation, each request
// goes to the node pick names or the next one in rotation, and a node
// whose listener refuses the connection is skipped for the next one.
type loadRun struct {
	mu       sync.Mutex
	outcomes []outcome
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ready    []atomic.Bool
}

const (
	roundTripSize = 4 << 10
	healthEvery   = 100 * time.Millisecond
)

func startLoad(c *clusterkit.Cluster, workers int, connID, target string, pick func(n uint64) int) *loadRun {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadRun{cancel: cancel, ready: make([]atomic.Bool, len(c.Nodes))}
	for i := range c.Nodes {
		l.ready[i].Store(true)
	}
	l.wg.Go(func() { l.healthChecks(ctx, c) })
	var seq atomic.Uint64
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				at := time.Now()
				node, err := l.roundTripAny(c, pick(seq.Add(1)), connID, target)
				l.mu.Lock()
				l.outcomes = append(l.outcomes, outcome{at: at, node: node, err: err})
				l.mu.Unlock()
			}
		})
	}
	c.T.Cleanup(l.stop)
	return l
}

// healthChecks polls every node's /readyz until ctx ends.
func (l *loadRun) healthChecks(ctx context.Context, c *clusterkit.Cluster) {
	hc := &http.Client{Timeout: healthEvery}
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		for i, nd := range c.Nodes {
			l.ready[i].Store(testkit.GetOK(hc, "http://"+nd.API+"/readyz"))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// roundTripAny runs one round trip through node first, or the next node
// in rotation whose listener accepts the connection.
func (l *loadRun) roundTripAny(c *clusterkit.Cluster, first int, connID, target string) (int, error) {
	err := errors.New("no node in rotation")
	for k := range c.Nodes {
		i := (first + k) % len(c.Nodes)
		if !l.ready[i].Load() {
			continue
		}
		err = c.RoundTrip(i, connID, target, roundTripSize)
		if !refusedByListener(err) {
			return i, err
		}
	}
	return -1, fmt.Errorf("every listener refused: %w", err)
}

// refusedByListener tells a connection the node refused at once (nothing
// listens, or the listener closed during the handshake), which a load
// balancer retries on another node, from a request that failed.
func refusedByListener(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET))
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
