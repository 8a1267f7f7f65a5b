package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/clusterkit"
)

// Budgets of a cluster: what forwarding a stream to the node that holds
// the tunnel may cost over serving it on that node.
const (
	forwardedLatencyBudget = time.Millisecond // added at p50 to a new CONNECT + request
	forwardedBulkBar       = 0.7              // bulk through a forwarded stream, as a fraction of local
)

// BenchmarkCluster compares, in one run, streams served by the node that
// holds the agent's tunnels (local) with the same streams sent to another
// node and forwarded over the peer link (forwarded). It needs PostgreSQL
// (POSTERN_TEST_POSTGRES_URL) and skips without it.
func BenchmarkCluster(b *testing.B) {
	c := clusterkit.NewWith(b, 2, func(_ int, nd *clusterkit.Node, _ string) {
		nd.ExtraFlags = append(nd.ExtraFlags, "--log-level", "warn")
	})
	sink, web := startSink(b), startHTTPTarget(b)
	conn := c.CreateConnection("bench")
	c.StartAgent(conn.AgentToken, []string{sink.addr(), web.addr()}, 2, 0)
	c.WaitTunnels(1, conn.ID, "node-a", "node-a")
	local := &stack{proxyAddr: c.Nodes[0].Proxy, connID: conn.ID, key: c.AdminKey}
	forwarded := &stack{proxyAddr: c.Nodes[1].Proxy, connID: conn.ID, key: c.AdminKey}
	tab := table{base: "local", test: "forwarded"}
	rows, renewals := presenceWrites(b, c, 2)

	pairs := func(b *testing.B, rows []*row, work func(ctx context.Context, dial dialFunc) ([]float64, error)) {
		for i := range b.N {
			for k, fwd := range []bool{i%2 == 1, i%2 == 0} {
				dial := local.dialTunnel
				if fwd {
					dial = forwarded.dialTunnel
				}
				ctx, cancel := context.WithTimeout(b.Context(), opTimeout)
				samples, err := work(ctx, dial)
				cancel()
				if err != nil {
					b.Fatalf("run %d.%d (forwarded %v): %v", i, k, fwd, err)
				}
				for j, r := range rows {
					r.add(fwd, samples[j])
				}
			}
		}
	}
	for _, bc := range []struct {
		name string
		op   byte
	}{{"bulk upload, 1 stream", opUpload}, {"bulk download, 1 stream", opDownload}} {
		b.Run(bc.name, func(b *testing.B) {
			r := tab.reset(bc.name, "MB/s", true)
			pairs(b, []*row{r}, func(ctx context.Context, dial dialFunc) ([]float64, error) {
				mbps, err := bulk(ctx, dial, sink.addr(), bc.op, 1, bulkSingle, sink.pattern)
				return []float64{mbps}, err
			})
			r.report(b, "MB/s")
		})
	}
	url := "http://" + web.addr() + "/rest/api/2/issue/PROJ-1"
	for _, conc := range []int{1, 64} {
		name := fmt.Sprintf("HTTP new CONNECT per request, c=%d", conc)
		b.Run(name, func(b *testing.B) {
			rps := tab.reset(name+" throughput", "req/s", true)
			p50 := tab.reset(name+" p50", "µs", false)
			pairs(b, []*row{rps, p50}, func(ctx context.Context, dial dialFunc) ([]float64, error) {
				res, err := httpLoad(ctx, dial, nil, url, conc, false)
				return []float64{res.rps, float64(res.p50) / float64(time.Microsecond)}, err
			})
			rps.report(b, "req/s")
		})
	}

	fmt.Println("\nPostern cluster: a stream served by the node holding the tunnel (local) against the same")
	fmt.Println("stream sent to another node and forwarded over the peer link (forwarded); median of the runs.")
	if err := tab.write(os.Stdout); err != nil {
		b.Error(err)
	}
	checkClusterBudgets(b, &tab)
	verdict := "ok"
	if rows > 1 {
		verdict = "OVER BUDGET"
		b.Errorf("%.2f presence rows per tunnel per heartbeat, over the budget of 1", rows)
	}
	fmt.Printf("budget: presence writes %.2f rows per tunnel per heartbeat (<= 1), and %.2f renewal statements per node per heartbeat: %s\n",
		rows, renewals, verdict)
}

// presenceWrites watches node A, which holds tunnels tunnels, for ten
// heartbeats and returns the session rows it wrote per tunnel per
// heartbeat and its renewal statements per heartbeat.
func presenceWrites(b *testing.B, c *clusterkit.Cluster, tunnels int) (rows, renewals float64) {
	const beats = 10
	read := func() (float64, float64) {
		resp, err := http.Get("http://" + c.Nodes[0].API + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		return metricValue(string(text), `postern_relay_presence_writes_total{kind="session"}`),
			metricValue(string(text), `postern_relay_presence_writes_total{kind="renewal"}`)
	}
	s0, r0 := read()
	time.Sleep(beats * clusterkit.Heartbeat)
	s1, r1 := read()
	return (s1 - s0) / float64(tunnels) / beats, (r1 - r0) / beats
}

// metricValue is the value of the series named exactly so in a /metrics
// text, or 0.
func metricValue(text, series string) float64 {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// checkClusterBudgets fails the run when forwarding costs more than the
// design allows.
func checkClusterBudgets(b *testing.B, tab *table) {
	if r, ok := tab.find("HTTP new CONNECT per request, c=1 p50"); ok {
		added := time.Duration((median(r.tunnel) - median(r.direct)) * float64(time.Microsecond))
		verdict := "ok"
		if added > forwardedLatencyBudget {
			verdict = "OVER BUDGET"
			b.Errorf("forwarding adds %s at p50 to a new CONNECT, over the budget of %s", added, forwardedLatencyBudget)
		}
		fmt.Printf("budget: forwarding adds %s at p50 to a new CONNECT + request (<= %s): %s\n",
			added.Round(time.Microsecond), forwardedLatencyBudget, verdict)
	}
	for _, name := range []string{"bulk upload, 1 stream", "bulk download, 1 stream"} {
		r, ok := tab.find(name)
		if !ok {
			continue
		}
		verdict := "ok"
		if r.ratio() < forwardedBulkBar {
			verdict = "BELOW BAR"
			b.Errorf("%s: forwarded/local %.3f is under the bar of %.2f", name, r.ratio(), forwardedBulkBar)
		}
		fmt.Printf("budget: %s forwarded/local %.3f >= %.2f: %s\n", name, r.ratio(), forwardedBulkBar, verdict)
	}
}
