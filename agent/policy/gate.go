package policy

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// Resolver looks up a host's addresses with the customer's DNS.
type Resolver interface {
	Lookup(ctx context.Context, host string) ([]netip.Addr, resolve.Answer, error)
}

// Gate decides targets under the policy in force. It is safe for
// concurrent use; a decision keeps the policy it started with even when
// Set swaps it meanwhile.
type Gate struct {
	resolver Resolver
	policy   atomic.Pointer[Policy]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by every Set
}

// NewGate returns a gate deciding under p, resolving names with r.
func NewGate(p *Policy, r Resolver) *Gate {
	g := &Gate{resolver: r, changed: make(chan struct{})}
	g.policy.Store(p)
	return g
}

// Policy returns the policy in force.
func (g *Gate) Policy() *Policy { return g.policy.Load() }

// Set swaps the policy in force atomically and wakes every Changed
// watcher.
func (g *Gate) Set(p *Policy) {
	g.policy.Store(p)
	g.mu.Lock()
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

// Changed returns a channel closed at the next Set.
func (g *Gate) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Decide judges host:port under the policy in force: the allowlist's
// verdict, then for a name one lookup and a check of every address it
// returned. In report mode a would-be refusal by the rules is a Report
// decision; a malformed target and a failed lookup are refused in every
// mode.
func (g *Gate) Decide(ctx context.Context, host string, port int) Decision {
	pol := g.Policy()
	return g.decide(ctx, pol, pol.Mode, host, port)
}

// DecideEnforce judges host:port as enforce mode would, whatever the mode
// in force: a live check shows what enforcing the rules will do, and a
// target the rules refuse is neither resolved nor dialled.
func (g *Gate) DecideEnforce(ctx context.Context, host string, port int) Decision {
	return g.decide(ctx, g.Policy(), config.ModeEnforce, host, port)
}

// Resolve looks name up once and checks every address it returns for
// port, under the policy in force, without judging the name itself: the
// doctor shows DNS as a layer of its own and judges host:port (Judge) on
// the next one.
func (g *Gate) Resolve(ctx context.Context, name string, port int) Decision {
	pol := g.Policy()
	d := Decision{Result: Allow, Mode: pol.Mode}
	return g.resolve(ctx, pol, pol.Mode, d, name, port)
}

func (g *Gate) decide(ctx context.Context, pol *Policy, mode config.Mode, host string, port int) Decision {
	d := pol.judge(host, port, mode)
	if d.Result == Deny {
		return d
	}
	t, err := allowlist.NormalizeHost(host)
	if err != nil {
		return d.deny(protocol.BadTarget, err.Error())
	}
	if t.Addr.IsValid() {
		// The allowlist already judged the literal with every rule.
		d.Addrs = []netip.AddrPort{netip.AddrPortFrom(t.Addr, uint16(port))}
		return d
	}
	return g.resolve(ctx, pol, mode, d, t.Name, port)
}

// resolve looks name up and adds to d every address the rules allow for
// port, in the resolver's order.
func (g *Gate) resolve(ctx context.Context, pol *Policy, mode config.Mode, d Decision, name string, port int) Decision {
	d.Resolved = true
	found, answer, err := g.resolver.Lookup(ctx, name)
	d.Answer, d.Found = answer, found
	if err != nil {
		reason := resolve.Reason(err)
		if reason == protocol.ReasonUnknown {
			reason = protocol.DNSTimeout
		}
		return d.deny(reason, err.Error())
	}
	var blockedMsg string
	for _, addr := range found {
		if cd := pol.List.CheckAddr(addr, port); !cd.Allowed() {
			r := Refusal{Reason: protocol.TargetBlocked, Rule: cd.Rule, Why: cd.Reason, Addr: addr}
			d.Blocked = append(d.Blocked, r)
			if mode != config.ModeReport {
				blockedMsg = name + " resolved to " + addr.String() + ": " + cd.Reason
				continue
			}
			d.waive(r)
		}
		d.Addrs = append(d.Addrs, netip.AddrPortFrom(addr, uint16(port)))
	}
	if len(d.Addrs) == 0 {
		if blockedMsg == "" {
			blockedMsg = name + " resolved to no address"
		}
		return d.deny(protocol.TargetBlocked, blockedMsg)
	}
	return d
}
