package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/relay/client"
)

// fleetDrain bounds how long a stopping fleet agent lets open streams
// finish; the fleet carries none.
const fleetDrain = 2 * time.Second

// fleet is many agents in this process: each an agent.Agent, the code
// postern-agent runs, with a connection and token of its own, tunnels,
// backoff and all. Only the process is shared.
type fleet struct {
	agents  []*agent.Agent
	tunnels int // each agent keeps
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// provision creates n connections through the relay's API, a few at a
// time, and returns their agent tokens.
func provision(ctx context.Context, admin *client.Client, n int) ([]string, error) {
	tokens := make([]string, n)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				conn, err := admin.CreateConnection(ctx, fmt.Sprintf("scale-%05d", i), "bench")
				if err != nil {
					once.Do(func() { first = fmt.Errorf("create connection %d: %w", i, err) })
					continue
				}
				tokens[i] = conn.AgentToken
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return tokens, first
}

// fleetConfig is one fleet agent's config file: the relay, its tunnels,
// and an allowlist nobody uses.
func fleetConfig(relayURL string, tunnels, i int) []byte {
	return fmt.Appendf(nil, "relay_url: %s\ntunnels: %d\nagent_id: scale-%05d\nallow:\n  - ip: 127.0.0.1\n    ports: [9]\n", relayURL, tunnels, i)
}

// startFleet starts one agent per token against relayURL. The fleet stops
// when the test ends, before the relay does.
func startFleet(tb testing.TB, relayURL string, tokens []string, tunnels int) *fleet {
	tb.Helper()
	res, err := resolve.New(resolve.Config{Servers: []string{"127.0.0.1:53"}})
	if err != nil {
		tb.Fatalf("resolver: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, tunnels: tunnels}
	tb.Cleanup(f.stop)
	for i, tok := range tokens {
		env := func(k string) (string, bool) { return tok, k == config.EnvAgentToken }
		cfg, err := config.Parse(fmt.Sprintf("fleet-%d.yaml", i), fleetConfig(relayURL, tunnels, i), env)
		if err != nil {
			tb.Fatalf("fleet agent %d: %v", i, err)
		}
		opts := agent.DefaultOptions()
		opts.Config, opts.Token, opts.Resolver, opts.DrainTimeout = cfg, tok, res, fleetDrain
		a, err := agent.New(opts)
		if err != nil {
			tb.Fatalf("fleet agent %d: %v", i, err)
		}
		f.agents = append(f.agents, a)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = a.Run(ctx)
		}()
	}
	return f
}

// stop ends every agent and waits for them; calling it again is harmless.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// tunnelsUp counts the fleet's live tunnels, and the agents with every
// tunnel up.
func (f *fleet) tunnelsUp() (tunnels, complete int) {
	for _, a := range f.agents {
		n := a.TunnelsUp()
		tunnels += n
		if n >= f.tunnels {
			complete++
		}
	}
	return tunnels, complete
}
