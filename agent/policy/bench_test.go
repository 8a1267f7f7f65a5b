package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/agent/resolve/dnstest"
)

// BenchmarkPlanWarmCache measures deciding a stream — allowlist decision,
// resolution from a warm DNS cache, and the check of every resolved
// address — for a 10-rule and a 10,000-rule list. The budget is 5 µs.
func BenchmarkPlanWarmCache(b *testing.B) {
	srv := dnstest.New(b, dnstest.NewZone(b, "gitlab.corp.example. 300 IN A 10.20.30.40").Reply)

	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			var y strings.Builder
			y.WriteString("relay_url: ws://127.0.0.1:1\nallow:\n  - host: gitlab.corp.example\n    ports: [443]\n")
			for i := range n - 1 {
				switch i % 3 {
				case 0:
					fmt.Fprintf(&y, "  - host: svc%d.corp.example\n    ports: [443]\n", i)
				case 1:
					fmt.Fprintf(&y, "  - host: \"*.team%d.corp.example\"\n    ports: [443]\n", i)
				default:
					fmt.Fprintf(&y, "  - cidr: 10.%d.%d.0/24\n    ports: [443]\n", (i/256)%256, i%256)
				}
			}
			cfg, err := config.Parse("bench.yaml", []byte(y.String()), nil)
			if err != nil {
				b.Fatal(err)
			}
			res, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, HostsFile: b.TempDir() + "/none", ResolvConf: b.TempDir() + "/none"})
			if err != nil {
				b.Fatal(err)
			}
			g := NewGate(New(cfg, time.Now()), res)
			ctx := context.Background()
			d := g.Decide(ctx, "gitlab.corp.example", 443) // warms the cache
			if d.Result != Allow || len(d.Addrs) != 1 || d.Addrs[0].Addr() != netip.MustParseAddr("10.20.30.40") {
				b.Fatalf("decision = %+v", d)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if d := g.Decide(ctx, "gitlab.corp.example", 443); d.Result != Allow {
					b.Fatal(d)
				}
			}
		})
	}
}
