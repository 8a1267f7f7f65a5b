package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/client"
)

// Targets of the scale scenario (issue 15).
const (
	rssPerAgentTarget   = 64 << 10 // bytes of relay RSS per idle agent
	reconnectAllTarget  = 60 * time.Second
	handshakeRateTarget = 500 // per second, at the relay
)

// Bounds of the scale scenario, so that it always stops by itself.
const (
	scaleConnectTimeout = 5 * time.Minute // the fleet's first connect
	scaleRestartTimeout = 3 * time.Minute // everything back after the restart
	scaleIdleWindow     = 20 * time.Second
	scaleSettle         = 5 * time.Second
)

// The fleet under make bench: POSTERN_BENCH_AGENTS agents (default
// 10,000) of POSTERN_BENCH_TUNNELS tunnels each (default 2, the agent's).
const (
	defaultScaleAgents  = 10_000
	defaultScaleTunnels = 2
)

// scaleResult is what the scale scenario measured.
type scaleResult struct {
	agents, tunnels   int
	rssPerAgent       float64       // bytes of relay RSS per connected idle agent
	idleCPUPerAgent   float64       // relay CPU seconds per agent per hour, idle
	allDown           time.Duration // kill to every agent seeing its tunnels drop
	relayBack         time.Duration // kill to the new relay answering /healthz
	allBack           time.Duration // kill to every tunnel up again
	p50, p99          time.Duration // kill to an agent having both tunnels up again
	maxRate, meanRate float64       // admitted handshakes per second at the relay
	paced             float64       // handshakes the relay paced (503 + Retry-After)
}

// envCount reads a count from the environment variable name, def when
// unset.
func envCount(tb testing.TB, name string, def, most int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		tb.Fatalf("%s=%q: want a count from 1 to %d", name, v, most)
	}
	return n
}

// raiseFDLimit lifts this process's open-file limit to want, which the
// relay child inherits: each tunnel is a socket on both sides. Past the
// hard limit it needs CAP_SYS_RESOURCE.
func raiseFDLimit(tb testing.TB, want uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= want {
		return
	}
	next := syscall.Rlimit{Cur: max(lim.Max, want), Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		tb.Fatalf("open-file limit %d (hard %d) is under the %d this fleet needs, and raising it failed (%v): "+
			"raise the hard limit (ulimit -Hn, or CAP_SYS_RESOURCE) or lower POSTERN_BENCH_AGENTS / POSTERN_BENCH_TUNNELS",
			lim.Cur, lim.Max, want, err)
	}
}

// scaleRelay is the relay of the scale scenario: one binary on SQLite,
// killed and started again on the same data directory and port.
type scaleRelay struct {
	bin, base string
	args      []string
	proc      *testkit.Process
	profiles  *profiler
}

func (r *scaleRelay) start(tb testing.TB, judged bool) {
	tb.Helper()
	if judged {
		r.proc = startProcess(tb, "relay", r.bin, r.profiles.env("relay"), r.args...)
	} else {
		cmd := exec.Command(r.bin, r.args...)
		cmd.Env = append(os.Environ(), r.profiles.env("relay")...)
		r.proc = testkit.StartCmd(tb, "relay", cmd)
	}
	testkit.WaitFor(tb, setupTimeout, "relay answers /healthz", func() bool {
		return testkit.GetOK(http.DefaultClient, r.base+"/healthz")
	})
}

// metric sums the samples of the relay's series name whose labels
// contain label ("" for any).
func (r *scaleRelay) metric(ctx context.Context, name, label string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(series, "#") || !strings.HasPrefix(series, name) || !strings.Contains(series, label) {
			continue
		}
		if rest := series[len(name):]; rest != "" && rest[0] != '{' {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", series, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// newScaleRelay starts the relay, provisions n connections and returns
// their tokens.
func newScaleRelay(tb testing.TB, n int) (*scaleRelay, []string) {
	tb.Helper()
	relayBin, _ := testkit.Binaries(tb)
	dataDir := filepath.Join(tb.TempDir(), "relay")
	apiAddr := testkit.FreeAddr(tb)
	r := &scaleRelay{bin: relayBin, base: "http://" + apiAddr, args: []string{"serve", "--data", dataDir,
		"--listen", apiAddr, "--proxy-listen", testkit.FreeAddr(tb), "--log-level", "error"},
		profiles: newProfiler(tb, "relay")}
	r.start(tb, false)
	ctx, cancel := context.WithTimeout(tb.Context(), scaleConnectTimeout)
	defer cancel()
	tokens, err := provision(ctx, client.New(r.base, testkit.AdminKey(tb, dataDir), nil), n)
	if err != nil {
		tb.Fatalf("provision %d connections: %v", n, err)
	}
	return r, tokens
}

// runScaleRows runs the scale scenario once, however often the testing
// package calls the sub-benchmark, and adds its figures to tab.
func runScaleRows(b *testing.B, tab *table) {
	n := envCount(b, "POSTERN_BENCH_AGENTS", defaultScaleAgents, 100_000)
	tunnels := envCount(b, "POSTERN_BENCH_TUNNELS", defaultScaleTunnels, 16)
	var res *scaleResult
	b.Run(fmt.Sprintf("%d agents", n), func(b *testing.B) {
		if res == nil {
			r := runScale(b, n, tunnels)
			res = &r
		}
		b.ReportMetric(res.rssPerAgent/1024, "relay_KiB/agent")
		b.ReportMetric(res.allBack.Seconds(), "s_all_back")
		b.ReportMetric(res.maxRate, "max_handshakes/s")
	})
	if res != nil {
		res.addFigures(tab)
	}
}

// addFigures writes the result into tab's figures section.
func (r *scaleResult) addFigures(tab *table) {
	fleet := fmt.Sprintf("%d agents x %d tunnels", r.agents, r.tunnels)
	secs := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	for _, f := range []figure{
		{name: "relay RSS per idle agent, " + fleet, value: fmt.Sprintf("%.1f KiB", r.rssPerAgent/1024),
			target: fmt.Sprintf("<= %d KiB", rssPerAgentTarget>>10), judged: true, ok: r.rssPerAgent <= rssPerAgentTarget},
		{name: "relay CPU per idle agent", value: fmt.Sprintf("%.2f µs/s", r.idleCPUPerAgent)},
		{name: "relay kill: every agent saw its tunnels drop", value: secs(r.allDown)},
		{name: "relay restart: kill to /healthz", value: secs(r.relayBack)},
		{name: "restart: kill to every tunnel back", value: secs(r.allBack),
			target: "<= " + secs(reconnectAllTarget), judged: true, ok: r.allBack <= reconnectAllTarget},
		{name: "restart: kill to an agent's tunnels back, p50 / p99", value: secs(r.p50) + " / " + secs(r.p99)},
		{name: "restart: handshakes admitted, busiest second", value: fmt.Sprintf("%.0f /s", r.maxRate),
			target: fmt.Sprintf("<= %d /s", handshakeRateTarget), judged: true, ok: r.maxRate <= handshakeRateTarget},
		{name: "restart: handshakes admitted, mean", value: fmt.Sprintf("%.0f /s", r.meanRate)},
		{name: "restart: handshakes paced (503 + Retry-After)", value: fmt.Sprintf("%.0f", r.paced)},
	} {
		tab.addFigure(f)
	}
}
