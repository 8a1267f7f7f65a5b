package bench

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/postern/postern/cmd/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testkit.Main(m))
}

// Sizes of the bulk scenarios.
const (
	bulkSingle      = 256 << 20 // one stream
	bulkParallel    = 256 << 20 // in all, over parallelStreams
	parallelStreams = 8
)

// ratioBar is the least single-stream bulk throughput the tunnel must
// reach, as a fraction of a direct connection in the same run.
const ratioBar = 0.2

// opTimeout bounds one measurement (one direct or one tunnel run).
const opTimeout = 2 * time.Minute

// env is everything a run needs: the targets and a relay + agent stack
// allowed to reach them.
type env struct {
	sink    *sinkServer
	web     *httpTarget
	stack   *stack
	pattern []byte
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	relayBin, agentBin := testkit.Binaries(tb)
	sink := startSink(tb)
	web := startHTTPTarget(tb)
	st := startStack(tb, relayBin, agentBin, false, sink.addr(), web.addr())
	return &env{sink: sink, web: web, stack: st, pattern: sink.pattern}
}

// interleaved calls measure for direct and tunnel, alternating which goes
// first from one iteration to the next so drift hits both alike.
func (e *env) interleaved(i int, measure func(tunnel bool, dial dialFunc) error) error {
	order := []bool{false, true}
	if i%2 == 1 {
		order = []bool{true, false}
	}
	for _, tunnel := range order {
		name, dial := "direct", dialFunc(dialDirect)
		if tunnel {
			name, dial = "tunnel", e.stack.dialTunnel
		}
		if err := measure(tunnel, dial); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// metered runs work, which returns how many units it did, and for the
// tunnel records the relay's and agent's CPU milliseconds per unit.
func (e *env) metered(tunnel bool, cost *costRow, work func() (units float64, err error)) error {
	if !tunnel {
		_, err := work()
		return err
	}
	r0, a0, err := e.stack.cpuTime()
	if err != nil {
		return err
	}
	units, err := work()
	if err != nil {
		return err
	}
	r1, a1, err := e.stack.cpuTime()
	if err != nil {
		return err
	}
	if units > 0 {
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / units }
		cost.relay = append(cost.relay, ms(r1-r0))
		cost.agent = append(cost.agent, ms(a1-a0))
	}
	return nil
}

// measure runs b.N iterations of work, direct and through the tunnel (see
// interleaved), each bounded by opTimeout and metered into cost. work
// returns how many units of cost it did and one sample for each of rows.
func (e *env) measure(b *testing.B, rows []*row, cost *costRow, work func(ctx context.Context, tunnel bool, dial dialFunc) (units float64, samples []float64, err error)) {
	for i := range b.N {
		err := e.interleaved(i, func(tunnel bool, dial dialFunc) error {
			ctx, cancel := context.WithTimeout(b.Context(), opTimeout)
			defer cancel()
			var samples []float64
			err := e.metered(tunnel, cost, func() (units float64, err error) {
				units, samples, err = work(ctx, tunnel, dial)
				return units, err
			})
			if err != nil {
				return err
			}
			for j, r := range rows {
				r.add(tunnel, samples[j])
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// bulkCase is one bulk transfer scenario.
type bulkCase struct {
	name    string
	op      byte
	streams int
	total   int64
}

// httpCase is one HTTP load scenario.
type httpCase struct {
	name      string
	conc      int
	keepAlive bool
	// forwarded sends the tunnel's requests as plain http:// proxy
	// requests (the relay forwards them) instead of through a CONNECT.
	forwarded bool
}

var (
	bulkCases = []bulkCase{
		{"bulk upload, 1 stream", opUpload, 1, bulkSingle},
		{"bulk download, 1 stream", opDownload, 1, bulkSingle},
		{fmt.Sprintf("bulk upload, %d streams", parallelStreams), opUpload, parallelStreams, bulkParallel},
		{fmt.Sprintf("bulk download, %d streams", parallelStreams), opDownload, parallelStreams, bulkParallel},
	}
	httpCases = []httpCase{
		{"HTTP keep-alive, c=1", 1, true, false},
		{"HTTP keep-alive, c=64", 64, true, false},
		{"HTTP new CONNECT per request, c=64", 64, false, false},
		{"HTTP keep-alive via http:// proxy, c=1", 1, true, true},
	}
)

func BenchmarkTunnel(b *testing.B) {
	e := newEnv(b)
	var tab table
	e.runIdle(b, &tab) // first, while the processes have held no streams
	e.runBulk(b, &tab, bulkCases, "")
	e.runHTTP(b, &tab, httpCases, "")
	e.runTLS(b, &tab)
	runScaleRows(b, &tab)

	fmt.Printf("\nPostern tunnel vs direct TCP on 127.0.0.1 (GOMAXPROCS=%d, %s/%s); median of the runs in each cell.\n",
		runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	fmt.Println("ratio = tunnel / direct; for throughput higher is better, for latency lower is better.")
	if err := tab.write(os.Stdout); err != nil {
		b.Error(err)
	}
	relayRSS, agentRSS, err := e.stack.peakRSS()
	if err != nil {
		b.Error(err)
	} else {
		fmt.Printf("peak RSS (VmHWM): relay %.1f MiB, agent %.1f MiB\n",
			float64(relayRSS)/(1<<20), float64(agentRSS)/(1<<20))
	}
	checkBar(b, &tab)
	tab.checkFigures(b)
}

// runBulk measures the bulk cases; suffix names the stack in the rows.
func (e *env) runBulk(b *testing.B, tab *table, cases []bulkCase, suffix string) {
	for _, bc := range cases {
		name := bc.name + suffix
		b.Run(name, func(b *testing.B) {
			r := tab.reset(name, "MB/s", true)
			cost := tab.resetCost(name, "CPU ms per GB")
			e.measure(b, []*row{r}, cost, func(ctx context.Context, _ bool, dial dialFunc) (float64, []float64, error) {
				mbps, err := bulk(ctx, dial, e.sink.addr(), bc.op, bc.streams, bc.total, e.pattern)
				return float64(bc.total) / 1e9, []float64{mbps}, err
			})
			r.report(b, "MB/s")
			err := e.stack.profiles.during(b.Context(), name, func() error {
				// Transfers back to back for as long as the profiles sample.
				end := time.Now().Add(httpDuration)
				for time.Now().Before(end) {
					ctx, cancel := context.WithTimeout(b.Context(), opTimeout)
					_, err := bulk(ctx, e.stack.dialTunnel, e.sink.addr(), bc.op, bc.streams, bc.total, e.pattern)
					cancel()
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// runHTTP measures the HTTP cases; suffix names the stack in the rows.
func (e *env) runHTTP(b *testing.B, tab *table, cases []httpCase, suffix string) {
	url := "http://" + e.web.addr() + "/rest/api/2/issue/PROJ-1"
	for _, hc := range cases {
		name := hc.name + suffix
		b.Run(name, func(b *testing.B) {
			rps := tab.reset(name+" throughput", "req/s", true)
			p50 := tab.reset(name+" p50", "µs", false)
			p99 := tab.reset(name+" p99", "µs", false)
			cost := tab.resetCost(name, "CPU ms per 1000 requests")
			e.measure(b, []*row{rps, p50, p99}, cost, func(ctx context.Context, tunnel bool, dial dialFunc) (float64, []float64, error) {
				var via *neturl.URL
				if tunnel && hc.forwarded {
					via = e.stack.proxyURL()
				}
				res, err := httpLoad(ctx, dial, via, url, hc.conc, hc.keepAlive)
				us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
				return float64(res.requests) / 1000, []float64{res.rps, us(res.p50), us(res.p99)}, err
			})
			rps.report(b, "req/s")
			err := e.stack.profiles.during(b.Context(), name, func() error {
				var via *neturl.URL
				if hc.forwarded {
					via = e.stack.proxyURL()
				}
				_, err := httpLoad(b.Context(), e.stack.dialTunnel, via, url, hc.conc, hc.keepAlive)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(median(p50.tunnel), "tunnel_p50_us")
			b.ReportMetric(median(p99.tunnel), "tunnel_p99_us")
		})
	}
}

// checkBar fails the run when single-stream bulk through the tunnel falls
// under ratioBar of direct in either direction.
func checkBar(b *testing.B, tab *table) {
	for _, name := range []string{"bulk upload, 1 stream", "bulk download, 1 stream"} {
		r, ok := tab.find(name)
		if !ok {
			continue // filtered out with -bench
		}
		verdict := "ok"
		if r.ratio() < ratioBar {
			verdict = "BELOW BAR"
			b.Errorf("%s: tunnel/direct %.3f is under the bar of %.2f", name, r.ratio(), ratioBar)
		}
		fmt.Printf("bar %s: tunnel/direct %.3f >= %.2f: %s\n", name, r.ratio(), ratioBar, verdict)
	}
}
