package bench

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// idleStreams is how many streams the idle rows open and keep: within
// the relay's default cap of 512 per tunnel over the agent's two.
const idleStreams = 1000

// idleStreamTarget is the most resident memory an idle stream may add to
// the relay and the agent together.
const idleStreamTarget = 40.0 // KiB

// runIdle opens idleStreams streams to the HTTP target (16 at a time),
// directly and through the tunnel, and keeps them open while it measures:
// the median and 99th percentile time to open one, and, through the
// tunnel, the resident memory each adds to the relay and the agent. The
// memory is taken from the first tunnel run only, on processes that have
// never held this many streams: later runs reuse the memory the first
// one freed, and would report it as free.
func (e *env) runIdle(b *testing.B, tab *table) {
	name := fmt.Sprintf("open %d streams", idleStreams)
	var memory *idleMemory
	b.Run(name, func(b *testing.B) {
		p50 := tab.reset(name+" p50", "ms", false)
		p99 := tab.reset(name+" p99", "ms", false)
		cost := tab.resetCost(name, fmt.Sprintf("CPU ms per %d streams", idleStreams))
		e.measure(b, []*row{p50, p99}, cost, func(ctx context.Context, tunnel bool, dial dialFunc) (float64, []float64, error) {
			before := e.idleUsage(b, tunnel && memory == nil)
			conns, opens, err := openIdle(ctx, dial, e.web.addr())
			defer closeAll(conns)
			if err != nil {
				return 0, nil, err
			}
			if before != nil {
				memory = before.added(e.idleUsage(b, true))
				if err := e.stack.profiles.snapshot(ctx, name); err != nil {
					return 0, nil, err
				}
			}
			slices.Sort(opens)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			return 1, []float64{ms(opens[len(opens)/2]), ms(opens[len(opens)*99/100])}, nil
		})
		p50.report(b, "ms")
	})
	if memory != nil {
		total := memory.relay + memory.agent
		tab.addFigure(figure{name: fmt.Sprintf("%d idle streams: resident memory added per stream, relay + agent", idleStreams),
			value:  fmt.Sprintf("%.1f + %.1f = %.1f KiB", memory.relay, memory.agent, total),
			target: fmt.Sprintf("<= %.0f KiB", idleStreamTarget), judged: true, ok: total <= idleStreamTarget})
	}
}

// idleMemory is resident memory in KiB: of the processes, or per stream.
type idleMemory struct{ relay, agent float64 }

// idleUsage reads the relay's and agent's resident memory, or returns nil
// when want is false.
func (e *env) idleUsage(b *testing.B, want bool) *idleMemory {
	if !want {
		return nil
	}
	r, err := e.stack.relay.Usage()
	if err != nil {
		b.Fatal(err)
	}
	a, err := e.stack.agent.Usage()
	if err != nil {
		b.Fatal(err)
	}
	return &idleMemory{relay: float64(r.RSSKiB), agent: float64(a.RSSKiB)}
}

// added is what after holds beyond m, per idle stream.
func (m *idleMemory) added(after *idleMemory) *idleMemory {
	return &idleMemory{relay: (after.relay - m.relay) / idleStreams, agent: (after.agent - m.agent) / idleStreams}
}

// openIdle opens idleStreams streams to addr and returns them open, with
// the time each took.
func openIdle(ctx context.Context, dial dialFunc, addr string) ([]net.Conn, []time.Duration, error) {
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, idleStreams)
		opens = make([]time.Duration, 0, idleStreams)
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for range idleStreams {
		g.Go(func() error {
			t0 := time.Now()
			c, err := dial(gctx, addr)
			if err != nil {
				return err
			}
			took := time.Since(t0)
			mu.Lock()
			conns, opens = append(conns, c), append(opens, took)
			mu.Unlock()
			return nil
		})
	}
	return conns, opens, g.Wait()
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}
