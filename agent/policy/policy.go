package policy

import (
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// Policy is an allowlist with its mode and the summary reported to the
// relay. It is swapped as a whole on reload and never changed in place.
type Policy struct {
	List    *allowlist.List
	Mode    config.Mode
	Summary protocol.Allowlist
	// Blocked are the normalized entries of the config's blocked list,
	// for the agent's own status; the summary reports them too.
	Blocked []string
}

// New builds a Policy from a validated configuration.
func New(cfg *config.Config, loadedAt time.Time) *Policy {
	allow, deny := cfg.Rules.Specs()
	sum := protocol.Allowlist{
		Status:   "configured",
		Mode:     cfg.Mode.String(),
		Count:    cfg.Rules.Len(),
		SHA256:   cfg.Rules.SHA256(),
		LoadedAt: loadedAt.UTC(),
		Allow:    wireSpecs(allow),
		Deny:     wireSpecs(deny),
	}
	if len(allow) == 0 {
		sum.Status = "empty"
	}
	var blocked []string
	for _, b := range cfg.Rules.Blocked() {
		blocked = append(blocked, b.Addr)
	}
	sum.Blocked = blocked
	return &Policy{List: cfg.Rules, Mode: cfg.Mode, Summary: sum, Blocked: blocked}
}

// Refused returns a copy of p whose summary says a new file was refused
// with err: the rules stay in force, the relay's status shows why.
func (p *Policy) Refused(err error) *Policy {
	next := *p
	next.Summary.Status = "invalid"
	next.Summary.LastError = err.Error()
	return &next
}

func wireSpecs(in []allowlist.RuleSpec) []protocol.RuleSpec {
	out := make([]protocol.RuleSpec, len(in))
	for i, r := range in {
		out[i] = protocol.RuleSpec{Host: r.Host, IP: r.IP, CIDR: r.CIDR, Ports: r.Ports}
	}
	return out
}

// Judge is the allowlist's judgement of host:port under p's mode, without
// any lookup: Allow, Deny, or Report when report mode lets through a
// target no allow rule covers. A malformed target, a deny rule and the
// always-blocked set refuse in every mode.
func (p *Policy) Judge(host string, port int) Decision {
	return p.judge(host, port, p.Mode)
}

func (p *Policy) judge(host string, port int, mode config.Mode) Decision {
	ad := p.List.Decide(host, port)
	d := Decision{Result: Allow, Rule: ad.Rule, Mode: p.Mode}
	if ad.Allowed() {
		return d
	}
	reason := protocol.VerdictReason(ad.Verdict.String())
	if reason == protocol.ReasonUnknown {
		reason = protocol.TargetBlocked // a verdict newer than this agent refuses
	}
	// Report mode lifts exactly one refusal: no allow rule covers the
	// target. The allowlist puts a deny rule or an unsafe address (Blocked)
	// before that, so a target both would refuse is never waived.
	if mode == config.ModeReport && ad.Verdict == allowlist.Missing {
		d.waive(Refusal{Reason: reason, Rule: ad.Rule, Why: ad.Reason})
		return d
	}
	return d.deny(reason, ad.Reason)
}
