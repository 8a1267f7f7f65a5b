package bench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// fdSlack is what each process needs beside the tunnels' sockets:
// listeners, the store, tunnel requests being refused.
const fdSlack = 500

// runScale connects n agents of two tunnels each to one relay on SQLite,
// measures the relay idle, then kills it, starts it again on the same data
// directory and port, and measures the fleet coming back.
func runScale(tb testing.TB, n, tunnels int) scaleResult {
	tb.Helper()
	raiseFDLimit(tb, uint64(n*tunnels+fdSlack))
	relay, tokens := newScaleRelay(tb, n)
	before, err := relay.proc.Usage()
	if err != nil {
		tb.Fatal(err)
	}
	fl := startFleet(tb, "ws"+relay.base[len("http"):], tokens, tunnels)
	waitTunnels(tb, relay, fl, n*tunnels, scaleConnectTimeout)
	res := scaleResult{agents: n, tunnels: tunnels}
	measureIdle(tb, relay, &res, before.RSSKiB)
	if err := relay.profiles.snapshot(tb.Context(), fmt.Sprintf("%d idle agents", n)); err != nil {
		tb.Errorf("profiles of the idle fleet: %v", err)
	}
	measureRestart(tb, relay, fl, &res)
	fl.stop() // before the relay's cleanup, which would otherwise drain every tunnel
	return res
}

// waitTunnels waits until the relay counts want tunnels and the fleet
// has them all up.
func waitTunnels(tb testing.TB, r *scaleRelay, fl *fleet, want int, within time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), within)
	defer cancel()
	for {
		atRelay, err := r.metric(ctx, "postern_relay_tunnels", "")
		up, _ := fl.tunnelsUp()
		if err == nil && int(atRelay) == want && up == want {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("%d of %d tunnels up at the agents after %s; the relay's /metrics: %v tunnels, error %v", up, want, within, atRelay, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// measureIdle reads the relay's RSS growth over rssBeforeKiB per agent and
// its CPU use per agent while nothing but heartbeats flows.
func measureIdle(tb testing.TB, r *scaleRelay, res *scaleResult, rssBeforeKiB int64) {
	tb.Helper()
	time.Sleep(scaleSettle)
	cpu0, err := r.proc.CPUTime()
	if err != nil {
		tb.Fatal(err)
	}
	profiled := r.profiles.cpuFor(tb.Context(), fmt.Sprintf("%d idle agents", res.agents), scaleIdleWindow-time.Second)
	time.Sleep(scaleIdleWindow)
	cpu1, err := r.proc.CPUTime()
	if err != nil {
		tb.Fatal(err)
	}
	u, err := r.proc.Usage()
	if err != nil {
		tb.Fatal(err)
	}
	n := float64(res.agents)
	res.rssPerAgent = float64(u.RSSKiB-rssBeforeKiB) * 1024 / n
	res.idleCPUPerAgent = (cpu1 - cpu0).Seconds() / scaleIdleWindow.Seconds() / n * 1e6
	if err := profiled(); err != nil {
		tb.Errorf("CPU profile of the idle relay: %v", err)
	}
}

// measureRestart kills the relay, starts it again once every agent saw
// its tunnels drop, and follows the fleet back: each agent's time to both
// tunnels, and the handshakes the relay admitted per second.
func measureRestart(tb testing.TB, r *scaleRelay, fl *fleet, res *scaleResult) {
	tb.Helper()
	stopProfile := r.profiles.self("relay killed")
	killed := time.Now()
	r.proc.Kill()
	ctx, cancel := context.WithTimeout(tb.Context(), scaleRestartTimeout)
	defer cancel()
	for up, _ := fl.tunnelsUp(); up > 0; up, _ = fl.tunnelsUp() {
		if !sleepCtx(ctx, 50*time.Millisecond) {
			tb.Fatalf("%d tunnels still up %s after the relay was killed", up, time.Since(killed))
		}
	}
	res.allDown = time.Since(killed)
	if err := stopProfile(); err != nil {
		tb.Errorf("profile of the fleet seeing the relay go: %v", err)
	}
	launched := time.Now()
	r.start(tb, true)
	started := time.Now()
	res.relayBack = started.Sub(killed)
	upAt := followFleet(ctx, tb, r, fl, killed, launched, res)
	res.allBack = slices.Max(upAt)
	slices.Sort(upAt)
	res.p50, res.p99 = upAt[len(upAt)/2], upAt[min(len(upAt)-1, len(upAt)*99/100)]
	admitted, _ := r.metric(ctx, "postern_relay_tunnel_handshakes_total", `result="admitted"`)
	res.paced, _ = r.metric(ctx, "postern_relay_tunnel_handshakes_total", `result="paced"`)
	res.meanRate = admitted / time.Since(started).Seconds()
}

// followFleet polls the agents every 100 ms and the relay's handshake
// counter every second until every agent has all its tunnels up, and returns
// each agent's time since killed. The relay counts from launched, when
// its process started: the first second's rate takes in what it admitted
// before it answered /healthz.
func followFleet(ctx context.Context, tb testing.TB, r *scaleRelay, fl *fleet, killed, launched time.Time, res *scaleResult) []time.Duration {
	tb.Helper()
	upAt := make([]time.Duration, len(fl.agents))
	left := len(upAt)
	var lastCount float64
	lastScrape := launched
	for tick := 1; left > 0; tick++ {
		if !sleepCtx(ctx, 100*time.Millisecond) {
			tb.Fatalf("%d of %d agents not back %s after the relay was killed", left, len(upAt), time.Since(killed))
		}
		for i, a := range fl.agents {
			if upAt[i] == 0 && a.TunnelsUp() >= fl.tunnels {
				upAt[i], left = time.Since(killed), left-1
			}
		}
		if tick%10 == 0 || left == 0 {
			count, err := r.metric(ctx, "postern_relay_tunnel_handshakes_total", `result="admitted"`)
			if err == nil {
				now := time.Now()
				res.maxRate = max(res.maxRate, (count-lastCount)/now.Sub(lastScrape).Seconds())
				lastCount, lastScrape = count, now
			}
		}
	}
	return upAt
}

// sleepCtx waits d and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
