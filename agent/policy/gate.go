package policy

import (
	"context"
	"net/netip"
	"strings"
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
// verdict, then for a name one lookup, the deny host rules on every name
// the lookup followed, and a check of every address it returned. In report
// mode a target no allow rule covers is a Report decision; a malformed
// target, a deny rule, an unsafe address and a failed lookup are refused in
// every mode.
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

// resolve looks name up, applies the deny host rules to every name the
// resolver followed (the search-expanded name and each CNAME target), and
// adds to d every address the rules allow for port, in the resolver's
// order.
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
	if rule, why := deniedAlias(pol.List, name, answer, port); rule != "" {
		d.Rule = rule
		return d.deny(protocol.TargetBlocked, why)
	}
	for _, addr := range found {
		cd := pol.List.CheckAddr(addr, port)
		switch {
		case cd.Allowed():
		case cd.Verdict == allowlist.Missing && mode == config.ModeReport:
			// Only a list without allow rules says this of an address: the
			// one refusal report mode lifts, already waived for the target
			// when Decide judged it.
			if d.Result != Report {
				d.waive(Refusal{Reason: protocol.AllowlistMissing, Why: cd.Reason, Addr: addr})
			}
		default:
			d.Blocked = append(d.Blocked, addrRefusal(cd, addr))
			continue
		}
		d.Addrs = append(d.Addrs, netip.AddrPortFrom(addr, uint16(port)))
	}
	if len(d.Addrs) > 0 {
		return d
	}
	if len(d.Blocked) == 0 {
		return d.deny(protocol.TargetBlocked, name+" resolved to no address")
	}
	last := d.Blocked[len(d.Blocked)-1]
	return d.deny(last.Reason, name+" resolved to "+last.Addr.String()+": "+last.Why)
}

// addrRefusal is the refusal of one resolved address.
func addrRefusal(cd allowlist.Decision, addr netip.Addr) Refusal {
	reason := protocol.VerdictReason(cd.Verdict.String())
	if reason == protocol.ReasonUnknown {
		reason = protocol.TargetBlocked
	}
	return Refusal{Reason: reason, Rule: cd.Rule, Why: cd.Reason, Addr: addr}
}

// deniedAlias applies the deny host rules to the names the resolver
// followed to the addresses of name: the name it asked for after search
// expansion and each CNAME target. It returns the rule that refuses the
// first such name and why, or "".
func deniedAlias(l *allowlist.List, name string, a resolve.Answer, port int) (rule, why string) {
	asked := strings.ToLower(strings.TrimSuffix(name, "."))
	for i := -1; i < len(a.CNAMEs); i++ {
		via, met := " was looked up as ", a.Name
		if i >= 0 {
			via, met = " leads by CNAME to ", a.CNAMEs[i]
		}
		cd := l.CheckName(met, port)
		if met == "" || cd.Verdict != allowlist.Blocked {
			continue
		}
		met = strings.ToLower(strings.TrimSuffix(met, "."))
		if met == asked {
			return cd.Rule, cd.Reason
		}
		return cd.Rule, name + via + met + ", which matches " + cd.Rule
	}
	return "", ""
}
