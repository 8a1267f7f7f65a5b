package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/agent/stream"
)

// Agent keeps the tunnels and serves the streams. Create with New; Run
// blocks until its context ends.
type Agent struct {
	opts    Options
	log     *slog.Logger
	agentID string
	// instanceID names this process to the relay (Hello.instance_id), so
	// it can tell a restart from a second process with the same agent id.
	instanceID string
	hostname   string
	started    time.Time
	// gate decides every target under the policy in force.
	gate *policy.Gate
	// streams serves what the relay opens on every tunnel.
	streams *stream.Server
	// relayClient dials the relay (egress proxy, CA bundle, no redirects).
	relayClient *http.Client

	// draining counts sessions finishing their streams after a GoAway.
	draining sync.WaitGroup
	// forceCtx ends every drain at once (Force).
	forceCtx context.Context
	force    context.CancelFunc

	mu      sync.Mutex
	tunnels map[int]tunnelInfo // live tunnels by slot
	down    *TunnelsDown       // the newest failure to open a tunnel, until one opens
	everUp  bool               // a tunnel was up once since the agent started
	lastDNS resolve.Stats      // resolver counters at the previous Health
	// duplicate is the relay's DUPLICATE_AGENT notice, by the slot whose
	// tunnel received it, while it lasts.
	duplicate map[int]string
}

// tunnelInfo is what Status shows of one tunnel.
type tunnelInfo struct {
	URL         string
	NodeID      string
	ConnectedAt time.Time
}

// New validates opts and returns an Agent.
func New(opts Options) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc, err := relayHTTPClient(opts.Config)
	if err != nil {
		return nil, err
	}
	gate := policy.NewGate(policy.New(opts.Config, time.Now()), opts.Resolver)
	streams, err := stream.New(stream.Config{
		Gate: gate, Dial: opts.Dial, Audit: opts.Audit,
		OpenTimeout: opts.OpenTimeout, IdleTimeout: opts.IdleTimeout, CAFile: opts.Config.CAFile,
	})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	id := opts.Config.AgentID
	if id == "" {
		id = defaultAgentID(host)
	}
	a := &Agent{
		opts:        opts,
		log:         log,
		agentID:     id,
		instanceID:  newInstanceID(),
		hostname:    host,
		started:     time.Now(),
		gate:        gate,
		streams:     streams,
		relayClient: rc,
		tunnels:     make(map[int]tunnelInfo),
		duplicate:   make(map[int]string),
	}
	a.forceCtx, a.force = context.WithCancel(context.Background())
	return a, nil
}

// defaultAgentID derives a stable id from the hostname, so restarts of
// the same machine show as the same replica.
func defaultAgentID(host string) string {
	if host == "" {
		host = "unknown"
	}
	sum := sha256.Sum256([]byte(host))
	return "agent-" + hex.EncodeToString(sum[:4])
}

// SetPolicy swaps the allowlist atomically; streams in flight keep the
// policy they started with. Every tunnel reports the new summary to the
// relay at once rather than at its next heartbeat.
func (a *Agent) SetPolicy(p *policy.Policy) { a.gate.Set(p) }

// Policy returns the policy in force.
func (a *Agent) Policy() *policy.Policy { return a.gate.Policy() }

// Run keeps Config.Tunnels tunnels up until ctx ends. It never gives up on
// the relay: every failure is logged and retried with backoff. When ctx
// ends, the relay may open no new stream and open streams get up to
// DrainTimeout to finish; Force cuts that short.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for slot := range a.tunnelsWanted() {
		g.Go(func() error {
			a.keepTunnel(ctx, slot)
			return nil
		})
	}
	err := g.Wait()
	a.draining.Wait()
	a.force() // release the force context
	return err
}

// Force ends the drains of a stopping agent at once: open streams are cut.
func (a *Agent) Force() {
	a.log.Warn("forced stop: cutting open streams")
	a.force()
}

func (a *Agent) tunnelsWanted() int { return max(a.opts.Config.Tunnels, 1) }

func (a *Agent) setTunnel(slot int, info *tunnelInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if info == nil {
		delete(a.tunnels, slot)
		delete(a.duplicate, slot) // a notice lasts as long as its tunnel
		return
	}
	a.tunnels[slot] = *info
}

// TunnelsUp reports how many tunnels are connected now.
func (a *Agent) TunnelsUp() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.tunnels)
}
