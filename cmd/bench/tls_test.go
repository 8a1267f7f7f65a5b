package bench

import (
	"fmt"
	"testing"

	"github.com/postern/postern/cmd/internal/testkit"
)

// tlsSuffix names the rows measured through a relay serving TLS.
const tlsSuffix = " (wss://)"

// tlsRatioTarget is the least single-stream bulk throughput through a
// relay serving TLS (wss:// tunnel, TLS to the proxy), as a fraction of
// the same through a plain one in the same run.
const tlsRatioTarget = 0.8

// runTLS measures single-stream bulk and keep-alive HTTP through a second
// stack whose relay serves TLS, against the same targets, and adds the
// TLS / plain ratio of bulk as a figure.
func (e *env) runTLS(b *testing.B, tab *table) {
	relayBin, agentBin := testkit.Binaries(b)
	te := *e
	te.stack = startStack(b, relayBin, agentBin, true, e.sink.addr(), e.web.addr())
	te.runBulk(b, tab, bulkCases[:2], tlsSuffix)
	te.runHTTP(b, tab, httpCases[:2], tlsSuffix)
	for _, bc := range bulkCases[:2] {
		plain, ok := tab.find(bc.name)
		wss, tok := tab.find(bc.name + tlsSuffix)
		if !ok || !tok || len(plain.tunnel) == 0 || len(wss.tunnel) == 0 {
			continue // filtered out with -bench
		}
		ratio := median(wss.tunnel) / median(plain.tunnel)
		tab.addFigure(figure{name: "TLS / plain tunnel, " + bc.name, value: fmt.Sprintf("%.3f", ratio),
			target: fmt.Sprintf(">= %.2f", tlsRatioTarget), judged: true, ok: ratio >= tlsRatioTarget})
	}
}
