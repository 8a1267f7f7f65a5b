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

// idleStreams is how many streams BenchmarkIdleStreams opens and keeps:
// within the relay's default cap of 512 per tunnel over the agent's two.
const idleStreams = 1000

// BenchmarkIdleStreams opens idleStreams CONNECT streams to the HTTP target
// (16 at a time), reports the median and 99th percentile time to open one,
// and, while all sit idle, what each costs the relay and the agent in
// resident memory.
func BenchmarkIdleStreams(b *testing.B) {
	e := newEnv(b)
	for range b.N {
		relay0, agent0 := usage(b, e)
		conns, opens, err := openIdle(b.Context(), e.stack.dialTunnel, e.web.addr())
		if err != nil {
			closeAll(conns)
			b.Fatal(err)
		}
		relay1, agent1 := usage(b, e)
		closeAll(conns)
		slices.Sort(opens)
		perStream := func(before, after int64) float64 { return float64(after-before) / idleStreams }
		b.ReportMetric(float64(opens[len(opens)/2].Microseconds())/1000, "open_p50_ms")
		b.ReportMetric(float64(opens[len(opens)*99/100].Microseconds())/1000, "open_p99_ms")
		b.ReportMetric(perStream(relay0, relay1), "relay_KiB/stream")
		b.ReportMetric(perStream(agent0, agent1), "agent_KiB/stream")
		fmt.Printf("%d idle streams: open p50 %s p99 %s; resident memory per stream: relay %.1f KiB, agent %.1f KiB\n",
			idleStreams, opens[len(opens)/2], opens[len(opens)*99/100], perStream(relay0, relay1), perStream(agent0, agent1))
	}
}

// usage returns the relay's and agent's resident memory now, in KiB.
func usage(b *testing.B, e *env) (relay, agent int64) {
	r, err := e.stack.relay.Usage()
	if err != nil {
		b.Fatal(err)
	}
	a, err := e.stack.agent.Usage()
	if err != nil {
		b.Fatal(err)
	}
	return r.RSSKiB, a.RSSKiB
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
