package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/backoff"
	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// Options configure an Agent.
type Options struct {
	// Config is the validated configuration. Required.
	Config *config.Config
	// Token is the agent token; it never leaves this process except in
	// the Authorization header of the tunnel request.
	Token string
	// Version is reported in Hello and Health.
	Version string
	// Logger receives operational logs.
	Logger *slog.Logger
	// Resolver resolves target names; required.
	Resolver policy.Resolver
	// Audit receives one entry per stream; nil disables auditing.
	Audit interface{ Write(audit.Entry) error }
	// Dial dials targets; defaults to a net.Dialer.
	Dial policy.DialFunc
	// OpenTimeout bounds resolve+connect of one stream when the relay's
	// request carries no earlier deadline.
	OpenTimeout time.Duration
	// IdleTimeout ends a stream with no traffic either way.
	IdleTimeout time.Duration
	// DrainTimeout bounds how long open streams may finish after a stop
	// (Run's context ends) or a relay's GoAway. Default 30 s.
	DrainTimeout time.Duration
	// RefusedTokenPause is the least wait after the relay refused the
	// token (401). Default 15 s.
	RefusedTokenPause time.Duration
	// BackoffBase and BackoffMax shape reconnect delays.
	BackoffBase, BackoffMax time.Duration
}

// Agent keeps the tunnels and serves the streams. Create with New; Run
// blocks until its context ends.
type Agent struct {
	opts     Options
	log      *slog.Logger
	agentID  string
	hostname string
	started  time.Time
	// gate decides every target under the policy in force.
	gate *policy.Gate
	// relayClient dials the relay (egress proxy, CA bundle, no redirects).
	relayClient *http.Client
	stats       stats

	// draining counts sessions finishing their streams after a GoAway.
	draining sync.WaitGroup
	// forceCtx ends every drain at once (Force).
	forceCtx context.Context
	force    context.CancelFunc

	mu      sync.Mutex
	tunnels map[int]tunnelInfo // live tunnels by slot
	lastDNS resolve.Stats      // resolver counters at the previous Health
}

// tunnelInfo is what Status shows of one tunnel.
type tunnelInfo struct {
	URL         string
	NodeID      string
	ConnectedAt time.Time
}

// New validates opts and returns an Agent.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil || opts.Config.Rules == nil {
		return nil, errors.New("agent: a validated config is required")
	}
	if opts.Token == "" {
		return nil, errors.New("agent: token is required")
	}
	if opts.Resolver == nil {
		return nil, errors.New("agent: resolver is required")
	}
	if len(opts.Config.RelayURLs) == 0 {
		return nil, errors.New("agent: relay_url is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		opts.Dial = d.DialContext
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 15 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 15 * time.Minute
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.RefusedTokenPause <= 0 {
		opts.RefusedTokenPause = 15 * time.Second
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 500 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	rc, err := relayHTTPClient(opts.Config)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	id := opts.Config.AgentID
	if id == "" {
		id = defaultAgentID(host)
	}
	a := &Agent{
		opts:     opts,
		log:      opts.Logger,
		agentID:  id,
		hostname: host,
		started:  time.Now(),
		tunnels:  make(map[int]tunnelInfo),
		gate:     policy.NewGate(policy.New(opts.Config, time.Now()), opts.Resolver),

		relayClient: rc,
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
	n := max(a.opts.Config.Tunnels, 1)
	for slot := range n {
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

// keepTunnel runs one tunnel slot: connect, serve, and on any end
// reconnect after a jittered delay. Slots start on different relay URLs.
func (a *Agent) keepTunnel(ctx context.Context, slot int) {
	bo := backoff.New(a.opts.BackoffBase, a.opts.BackoffMax)
	urls := a.opts.Config.RelayURLs
	for attempt := 0; ; attempt++ {
		u := urls[(slot+attempt)%len(urls)]
		log := a.log.With("tunnel", slot, "relay", tunnel.Redact(u))
		up, err := a.runTunnel(ctx, slot, u, log)
		if ctx.Err() != nil {
			return
		}
		if up {
			bo.Reset()
		}
		var re *tunnel.UpgradeError
		switch {
		case errors.As(err, &re):
			log.Error("relay refused the tunnel; will keep retrying", "status", re.StatusCode, "reason", refusalReason(re), "message", refusalMessage(re))
			pause := min(re.RetryAfter(), maxRetryAfterPause) // the relay asked for a pause (rate limited)
			if re.StatusCode == http.StatusUnauthorized {
				// A refused token will not fix itself in a second; retrying
				// slowly keeps this address under the relay's limit on
				// refused credentials, so doctor still sees the reason.
				pause = max(pause, a.opts.RefusedTokenPause)
			}
			if pause > 0 && !sleep(ctx, pause) {
				return
			}
		case errors.Is(err, errGoAway):
			log.Info("tunnel down; reconnecting", "err", err)
		case err != nil:
			log.Warn("tunnel down; reconnecting", "err", err)
		}
		if !bo.Wait(ctx) {
			return
		}
	}
}

// sleep waits d or until ctx ends, and reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// maxRetryAfterPause caps a pause the relay asks for.
const maxRetryAfterPause = 10 * time.Minute

func refusalReason(e *tunnel.UpgradeError) protocol.Reason {
	if e.Refusal == nil {
		return protocol.ReasonUnknown
	}
	return e.Refusal.Reason
}

func refusalMessage(e *tunnel.UpgradeError) string {
	if e.Refusal == nil {
		return e.Error()
	}
	return e.Refusal.Message
}

func (a *Agent) setTunnel(slot int, info *tunnelInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if info == nil {
		delete(a.tunnels, slot)
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

// stats are the agent-wide counters reported in Health.
type stats struct {
	active   atomic.Int64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64

	mu     sync.Mutex
	errors map[protocol.Reason]int
}

func (s *stats) countError(r protocol.Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errors == nil {
		s.errors = make(map[protocol.Reason]int)
	}
	s.errors[r]++
}

// takeErrors returns the error counts since the last call.
func (s *stats) takeErrors() map[protocol.Reason]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.errors
	s.errors = nil
	return out
}

// resolverHealth reports the resolver's counters when it keeps them.
func (a *Agent) resolverHealth() *protocol.ResolverHealth {
	rs, ok := a.opts.Resolver.(interface {
		Stats() resolve.Stats
		Servers() []string
		LastError() string
	})
	if !ok {
		return nil
	}
	cur := rs.Stats()
	a.mu.Lock()
	prev := a.lastDNS
	a.lastDNS = cur
	a.mu.Unlock()
	failed := (cur.ServFail - prev.ServFail) + (cur.Timeouts - prev.Timeouts)
	okNow := (cur.Lookups - prev.Lookups) - failed - (cur.NXDomain - prev.NXDomain) - (cur.NoAddress - prev.NoAddress)
	status := "ok"
	if failed > 0 && okNow == 0 {
		status = "failing"
	}
	return &protocol.ResolverHealth{
		Status: status, Servers: rs.Servers(), Lookups: cur.Lookups, Queries: cur.Queries,
		CacheHits: cur.CacheHits, NXDomain: cur.NXDomain + cur.NoAddress, ServFail: cur.ServFail,
		Timeouts: cur.Timeouts, LastError: rs.LastError(),
	}
}

func (a *Agent) health() protocol.Health {
	return protocol.Health{
		Resolver:      a.resolverHealth(),
		Time:          time.Now().UTC(),
		TunnelsUp:     a.TunnelsUp(),
		ActiveStreams: int(a.stats.active.Load()),
		BytesIn:       a.stats.bytesIn.Load(),
		BytesOut:      a.stats.bytesOut.Load(),
		UptimeSeconds: int64(time.Since(a.started).Seconds()),
		Version:       a.opts.Version,
		Allowlist:     a.Policy().Summary,
		Errors:        a.stats.takeErrors(),
	}
}

func (a *Agent) hello() protocol.Hello {
	return protocol.Hello{
		ProtocolVersion: protocol.Version,
		AgentID:         a.agentID,
		Hostname:        a.hostname,
		Version:         a.opts.Version,
		Tunnels:         max(a.opts.Config.Tunnels, 1),
		StartedAt:       a.started.UTC(),
		Allowlist:       a.Policy().Summary,
	}
}
