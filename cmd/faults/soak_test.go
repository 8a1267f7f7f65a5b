package faults

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/faultlink"
	"github.com/postern/postern/cmd/internal/testkit"
)

// envInt reads a positive count from the environment, for shorter local
// soak runs; the default is the number.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}

// growth asserts that fds and RSS of a binary stayed flat across a soak.
func assertFlat(t *testing.T, name string, before, after testkit.Usage, maxRSSGrowthKiB int64) {
	t.Helper()
	assert.LessOrEqual(t, after.FDs-before.FDs, 16, "%s file descriptors grew: %d -> %d", name, before.FDs, after.FDs)
	assert.LessOrEqual(t, after.RSSKiB-before.RSSKiB, maxRSSGrowthKiB, "%s RSS grew: %s -> %s", name, before, after)
	assert.LessOrEqual(t, after.Threads-before.Threads, int64(8), "%s threads grew: %d -> %d", name, before.Threads, after.Threads)
	t.Logf("%s before %s, after %s", name, before, after)
}

// A 1 KB/s link keeps the tunnel up and carries small streams; a bulk
// stream on it ends (it never hangs) and the tunnel recovers.
func TestSoakLinkBandwidth(t *testing.T) {
	soak(t)
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	s.startAgent(t, agentOptions{relays: []string{l.Addr}})
	before := s.relay.status(t, s.connID)
	slow := faultlink.Both("bandwidth", map[string]any{"rate": 1}) // KB/s
	l.Add(t, slow...)

	var small []time.Duration
	for range 3 {
		start := time.Now()
		require.NoError(t, s.roundTrip(1<<10, 90*time.Second), "1 KiB each way over 1 KB/s")
		small = append(small, time.Since(start))
	}
	time.Sleep(60 * time.Second) // keepalives and Health on a thin link
	kept := s.relay.status(t, s.connID)
	assert.Equal(t, "connected", kept.TunnelStatus)
	require.Len(t, kept.Agents, 1)
	assert.Equal(t, before.Agents[0].ConnectedAt, kept.Agents[0].ConnectedAt, "tunnels survive a minute at 1 KB/s")

	// 64 KiB takes a minute at this rate, while a keepalive ping queued
	// behind it must be answered within 10 s: the tunnel may be judged
	// dead. What matters is that the stream ends and the tunnel returns.
	start := time.Now()
	bulkErr := s.roundTrip(64<<10, 3*time.Minute)
	bulk := time.Since(start)
	assert.Less(t, bulk, 3*time.Minute, "a bulk stream on a thin link ends")
	l.Remove(t, slow...)
	back := s.waitConnected(t, time.Minute)
	require.NoError(t, s.roundTrip(1<<20, 30*time.Second))
	t.Logf("bandwidth 1 KB/s: 1 KiB round trips %v; tunnels kept for 60 s idle; 64 KiB round trip ended after %s with %v; connected %s after the link was restored",
		rounded(small), bulk.Round(time.Millisecond), bulkErr, back.Round(time.Millisecond))
}

// 10,000 streams opened at once (2,000 client connections in flight):
// every one is answered, by the target or with 429 AGENT_BUSY, none hangs,
// and the relay releases every stream afterwards.
func TestSoakTenThousandStreams(t *testing.T) {
	soak(t)
	s := newSystem(t)
	s.startAgent(t, agentOptions{})
	const streams, inFlight = 10_000, 2_000
	var ok, busy, failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for range streams {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tc, err := s.connect(s.echo, time.Minute)
			if err == nil {
				err = exchange(tc, 4<<10, time.Minute)
			}
			var refused *refusedError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &refused) && refused.status == http.StatusTooManyRequests && refused.reason == "AGENT_BUSY":
				busy.Add(1)
			default:
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	assert.Zero(t, failed.Load(), "every stream answered by the target or AGENT_BUSY; first other answer: %v", firstErr.Load())
	assert.Equal(t, int64(streams), ok.Load()+busy.Load()+failed.Load())
	assert.Positive(t, ok.Load())
	testkit.WaitFor(t, 30*time.Second, "relay releases every stream", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && len(st.Agents) == 1 && st.Agents[0].ActiveStreams == 0
	})
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
	t.Logf("10,000 streams, %d in flight: %d carried, %d AGENT_BUSY, %d other, in %s",
		inFlight, ok.Load(), busy.Load(), failed.Load(), took.Round(time.Millisecond))
}

// One million stream open/close cycles leave the relay's and the agent's
// file descriptors, threads and memory where they were.
func TestSoakStreamCycles(t *testing.T) {
	soak(t)
	cycles := envInt(t, "POSTERN_SOAK_CYCLES", 1_000_000)
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{})
	const workers = 32
	run := func(n int) (failed int64, firstErr error) {
		var next, fails atomic.Int64
		var errOnce sync.Once
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := s.roundTrip(16, 10*time.Second); err != nil {
						fails.Add(1)
						errOnce.Do(func() { firstErr = err })
					}
				}
			})
		}
		wg.Wait()
		return fails.Load(), firstErr
	}
	_, _ = run(5_000) // warm-up: pools, buffers, GC target
	time.Sleep(2 * time.Second)
	relayBefore, agentBefore := usage(t, s.relay.Process), usage(t, a.Process)

	start := time.Now()
	failed, firstErr := run(cycles)
	took := time.Since(start)
	time.Sleep(5 * time.Second) // let closes and GC settle
	relayAfter, agentAfter := usage(t, s.relay.Process), usage(t, a.Process)

	assert.Zero(t, failed, "failed cycles; first: %v", firstErr)
	st := s.relay.status(t, s.connID)
	require.Len(t, st.Agents, 1)
	assert.Zero(t, st.Agents[0].ActiveStreams, "no stream left open on the relay")
	assertFlat(t, "relay", relayBefore, relayAfter, 64<<10)
	assertFlat(t, "agent", agentBefore, agentAfter, 64<<10)
	t.Logf("%d stream cycles with %d workers in %s (%.0f/s), %d failed",
		cycles, workers, took.Round(time.Second), float64(cycles)/took.Seconds(), failed)
}

// 1,000 reconnects (the link cut and restored each time) leave no tunnel
// behind on the relay and no file descriptors, threads or memory behind
// in either binary.
func TestSoakReconnects(t *testing.T) {
	soak(t)
	n := envInt(t, "POSTERN_SOAK_RECONNECTS", 1_000)
	s := newSystem(t)
	l := faultlink.New(t, s.relay.apiAddr)
	a := s.startAgent(t, agentOptions{relays: []string{l.Addr}})
	prev := s.relay.status(t, s.connID).Agents[0].ConnectedAt
	reconnect := func() time.Duration {
		l.Cut()
		l.Heal(t)
		return testkit.WaitFor(t, 30*time.Second, "agent reconnected with both tunnels", func() bool {
			st, err := s.relay.tryStatus(s.connID)
			// An agent cut off every half second is flapping to the
			// relay after a few cuts; what matters here is that both its
			// tunnels are back.
			up := st.TunnelStatus == "connected" || st.TunnelStatus == "flapping"
			if err != nil || !up || len(st.Agents) != 1 || agentTunnels(st) != 2 {
				return false
			}
			if !st.Agents[0].ConnectedAt.After(prev) {
				return false
			}
			prev = st.Agents[0].ConnectedAt
			return true
		})
	}
	for range 10 {
		reconnect()
	}
	time.Sleep(2 * time.Second)
	relayBefore, agentBefore := usage(t, s.relay.Process), usage(t, a.Process)
	var took []time.Duration
	for i := range n {
		took = append(took, reconnect())
		if i%100 == 99 {
			require.NoError(t, s.roundTrip(64<<10, 20*time.Second), "after reconnect %d", i+1)
		}
	}
	time.Sleep(5 * time.Second)
	relayAfter, agentAfter := usage(t, s.relay.Process), usage(t, a.Process)
	st := s.relay.status(t, s.connID)
	assert.Equal(t, 2, agentTunnels(st), "the relay holds only the live tunnels")
	assert.Equal(t, 2, a.tunnelsUp())
	assertFlat(t, "relay", relayBefore, relayAfter, 32<<10)
	assertFlat(t, "agent", agentBefore, agentAfter, 32<<10)
	t.Logf("%d reconnects: p50 %s, max %s", n, median(took).Round(time.Millisecond), maxDuration(took).Round(time.Millisecond))
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// 2,000 slowloris connections (headers trickled a line every 2 s) are cut
// by the header read timeout, while a normal client keeps working.
func TestSoakSlowloris(t *testing.T) {
	soak(t)
	s := newSystem(t)
	s.startAgent(t, agentOptions{})
	const conns = 2_000
	var cut atomic.Int64
	var lived sync.Map // index -> time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		addr := s.relay.proxyAddr
		if i%2 == 1 {
			addr = s.relay.apiAddr
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		require.NoError(t, err)
		wg.Go(func() {
			defer c.Close()
			opened := time.Now()
			// Bounded: 20 lines over 40 s, far past the relay's 10 s.
			if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n", s.echo); err != nil {
				return
			}
			for j := range 20 {
				time.Sleep(2 * time.Second)
				if _, err := fmt.Fprintf(c, "X-Slow-%d: 1\r\n", j); err != nil {
					cut.Add(1)
					lived.Store(i, time.Since(opened))
					return
				}
			}
		})
	}
	// A normal client beside them.
	var normalOK, normalFail int
	var slowest time.Duration
	for time.Since(start) < 30*time.Second {
		t0 := time.Now()
		if err := s.roundTrip(4<<10, 5*time.Second); err != nil {
			normalFail++
			t.Logf("normal client: %v", err)
		} else {
			normalOK++
			slowest = max(slowest, time.Since(t0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	var longest time.Duration
	lived.Range(func(_, v any) bool {
		longest = max(longest, v.(time.Duration))
		return true
	})
	assert.Zero(t, normalFail, "the normal client keeps working")
	assert.Equal(t, int64(conns), cut.Load(), "every slowloris connection is cut")
	// A write notices the cut at the next 2 s tick after the 10 s header
	// timeout, a little later with the kernel's buffers.
	assert.LessOrEqual(t, longest, 16*time.Second, "header read timeout")
	require.True(t, s.relay.healthy())
	t.Logf("slowloris x%d: all cut, the last after %s; normal client %d ok, %d failed, slowest %s",
		conns, longest.Round(time.Millisecond), normalOK, normalFail, slowest.Round(time.Millisecond))
}

// Connections that made one request and then sit idle on keep-alive are
// closed by the relay after an idle timeout, so idle clients cannot hold
// its file descriptors forever.
func TestSoakIdleKeepAlive(t *testing.T) {
	soak(t)
	s := newSystem(t)
	const conns = 200
	closed := make(chan time.Duration, conns)
	var wg sync.WaitGroup
	for i := range conns {
		addr, req := s.relay.apiAddr, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
		if i%2 == 1 {
			// Refused for want of credentials, on a keep-alive connection.
			addr, req = s.relay.proxyAddr, "CONNECT "+s.echo+" HTTP/1.1\r\nHost: "+s.echo+"\r\n\r\n"
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		wg.Go(func() {
			defer c.Close()
			start := time.Now()
			_ = c.SetDeadline(start.Add(4 * time.Minute))
			if _, err := io.WriteString(c, req); err != nil {
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if _, err := io.Copy(io.Discard, c); !errors.Is(err, os.ErrDeadlineExceeded) {
				closed <- time.Since(start)
			}
		})
	}
	wg.Wait()
	close(closed)
	var longest time.Duration
	n := 0
	for d := range closed {
		n++
		longest = max(longest, d)
	}
	assert.Equal(t, conns, n, "every idle keep-alive connection is closed by the relay within 4 min")
	t.Logf("idle keep-alive: %d of %d closed by the relay, the last after %s", n, conns, longest.Round(time.Second))
}
