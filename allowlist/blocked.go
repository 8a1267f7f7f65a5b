package allowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rules is a whole rule set as written: allow and deny rules, and the
// addresses the customer adds to the always-blocked set.
type Rules struct {
	Allow, Deny []RuleSpec
	// Blocked joins the always-blocked set: each entry is refused on every
	// port, in every form an address can take (IPv4 inside IPv6 included),
	// unless an allow rule names that exact address with the port.
	Blocked []BlockedSpec
}

// BlockedSpec is one entry of the customer's always-blocked list.
type BlockedSpec struct {
	// Addr is one address ("192.0.2.7", "fd00::7") or a CIDR block
	// ("10.9.0.0/16").
	Addr string
	// Line is the entry's line in its source file, for messages; 0 if
	// unknown.
	Line int
}

// compileBlocked validates one entry of the blocked list. The rule it
// returns covers every port and names itself "blocked ip=..." or
// "blocked cidr=...".
func compileBlocked(spec BlockedSpec, index int) (*rule, error) {
	where := fmt.Sprintf("blocked[%d]", index)
	if spec.Line > 0 {
		where += fmt.Sprintf(" (line %d)", spec.Line)
	}
	r := &rule{index: index, deny: true}
	var err error
	switch {
	case spec.Addr == "":
		err = errors.New("empty entry; give an IP address or a CIDR block such as 10.9.0.0/16")
	case strings.IndexByte(spec.Addr, '/') >= 0:
		err = r.parseCIDR(spec.Addr)
	default:
		err = r.parseIP(spec.Addr)
		if err != nil && !strings.Contains(err.Error(), "zone") {
			err = errors.New("not an IP address or CIDR block (IPv4 as four decimal octets without leading zeros, or IPv6)")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w: %s", where, spec.Addr, ErrBadRule, err.Error())
	}
	r.spec.Line = spec.Line
	r.text = "blocked " + r.target()
	return r, nil
}

// target is the rule's "ip=..." or "cidr=..." text.
func (r *rule) target() string {
	if r.kind == kindIP {
		return "ip=" + r.spec.IP
	}
	return "cidr=" + r.spec.CIDR
}

// Blocked returns the normalized entries of the customer's always-blocked
// list in their original order, canonical addresses and blocks with Line
// kept. The slice is a copy.
func (l *List) Blocked() []BlockedSpec {
	if l == nil || len(l.blocked) == 0 {
		return nil
	}
	out := make([]BlockedSpec, len(l.blocked))
	for i, r := range l.blocked {
		out[i] = BlockedSpec{Addr: r.spec.IP + r.spec.CIDR, Line: r.spec.Line}
	}
	return out
}

// customerClass reports whether addr (one form of a target address) is on
// the customer's blocked list, as an always-blocked class named by the
// entry.
func (l *List) customerClass(addr netip.Addr) (unsafeClass, bool) {
	r, _ := l.blockedAddrs.lookup(addr, 0)
	if r == nil {
		return unsafeClass{}, false
	}
	desc := "on this agent's blocked list"
	if r.kind == kindCIDR {
		desc = "in " + r.spec.CIDR + ", " + desc
	}
	return unsafeClass{rule: r.text, desc: desc}, true
}

const reasonNoDenyName = "no deny host rule names it"

// CheckName judges a name the resolver met on the way to the addresses of
// a name target that Decide allowed: the search-expanded name it asked
// for, or a CNAME target. Deny host rules apply to it as they do to the
// target itself, so an alias cannot lead around them; allow rules do not
// (the target was already allowed). The name is taken as DNS wrote it:
// ASCII, case and one trailing dot ignored.
func (l *List) CheckName(name string, port int) Decision {
	if port < 1 || port > 65535 {
		return Decision{Verdict: BadTarget, Reason: "port " + strconv.Itoa(port) + " is outside 1-65535"}
	}
	if l == nil {
		return Decision{Verdict: Allowed, Reason: reasonNoDenyName}
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if r, _ := l.denyHosts.lookup(name, port); r != nil {
		return Decision{Verdict: Blocked, Rule: r.text, Reason: name + " matches " + r.text}
	}
	return Decision{Verdict: Allowed, Reason: reasonNoDenyName}
}
