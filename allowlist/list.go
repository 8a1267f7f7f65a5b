package allowlist

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// List is a compiled, immutable allowlist. It is safe for concurrent use; a
// reload compiles a new List and swaps the pointer. A nil *List refuses
// everything.
type List struct {
	allow, deny []*rule
	blocked     []*rule // the customer's additions to the always-blocked set
	allowHosts  hostTable
	denyHosts   hostTable
	allowAddrs  addrTable
	denyAddrs   addrTable
	// blockedAddrs holds the blocked entries; their ports are nil (every
	// port).
	blockedAddrs addrTable
	sum          string
}

const (
	reasonEmpty    = "the allowlist is empty (no allow rules), so every target is refused"
	reasonAddrPass = "address passes deny and unsafe-address checks"
)

// Compile validates allow and deny rules and builds a List; it is
// CompileRules without a blocked list.
func Compile(allow, deny []RuleSpec) (*List, error) {
	return CompileRules(Rules{Allow: allow, Deny: deny})
}

// CompileRules validates a rule set and builds a List. It reports every bad
// rule at once: the error joins one error per problem, each naming the list
// and index ("allow[2]", "blocked[0]"), the source line when known, and the
// field at fault, and each wrapping ErrBadRule.
func CompileRules(rs Rules) (*List, error) {
	l := &List{}
	var errs []error
	for i, spec := range rs.Allow {
		r, es := compileRule(spec, i, false)
		errs = append(errs, es...)
		if r != nil {
			l.allow = append(l.allow, r)
		}
	}
	for i, spec := range rs.Deny {
		r, es := compileRule(spec, i, true)
		errs = append(errs, es...)
		if r != nil {
			l.deny = append(l.deny, r)
		}
	}
	for i, spec := range rs.Blocked {
		r, err := compileBlocked(spec, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.blocked = append(l.blocked, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var text strings.Builder
	for _, r := range l.allow {
		addRule(&l.allowHosts, &l.allowAddrs, r)
		text.WriteString(r.text + "\n")
	}
	for _, r := range l.deny {
		addRule(&l.denyHosts, &l.denyAddrs, r)
		text.WriteString(r.text + "\n")
	}
	for _, r := range l.blocked {
		l.blockedAddrs.add(r)
		text.WriteString(r.text + "\n")
	}
	l.allowAddrs.build()
	l.denyAddrs.build()
	l.blockedAddrs.build()
	sum := sha256.Sum256([]byte(text.String()))
	l.sum = hex.EncodeToString(sum[:])
	return l, nil
}

func addRule(h *hostTable, a *addrTable, r *rule) {
	if r.kind == kindHost || r.kind == kindWildcard {
		h.add(r)
		return
	}
	a.add(r)
}

// Len returns the number of rules, allow and deny together.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return len(l.allow) + len(l.deny)
}

// Specs returns the normalized rules in their original order: hosts in
// lower-case punycode, canonical addresses and blocks, ports sorted with
// overlaps merged ("8000-8100"), and Line kept. Deny rules covering every
// port have no Ports. The slices are copies.
func (l *List) Specs() (allow, deny []RuleSpec) {
	if l == nil {
		return nil, nil
	}
	return copySpecs(l.allow), copySpecs(l.deny)
}

func copySpecs(rs []*rule) []RuleSpec {
	if len(rs) == 0 {
		return nil
	}
	out := make([]RuleSpec, len(rs))
	for i, r := range rs {
		out[i] = r.spec
		out[i].Ports = append([]string(nil), r.spec.Ports...)
	}
	return out
}

// SHA256 returns the hex SHA-256 of the canonical text of the normalized
// rules: one line per rule in list order, allow rules first, then deny
// rules, then blocked entries ("blocked cidr=10.9.0.0/16"). Spelling
// (case, Unicode or punycode, trailing dots, port order) and line numbers do
// not change it; reordering rules does.
func (l *List) SHA256() string {
	if l == nil {
		sum := sha256.Sum256(nil)
		return hex.EncodeToString(sum[:])
	}
	return l.sum
}

// Decide judges a request target as received. host is a DNS name or an IP
// literal (IPv6 possibly bracketed). Names are judged by host rules only and
// must then have every resolved address checked with CheckAddr. IP literals
// are judged by deny rules, the always-blocked set and ip and cidr rules.
// A refusal by a deny rule or the always-blocked set (Blocked) comes before
// "no allow rule covers it" (Missing), also when the list has no allow
// rules, so a caller that waives Missing never waives a block.
func (l *List) Decide(host string, port int) Decision {
	if port < 1 || port > 65535 {
		return Decision{Verdict: BadTarget, Reason: "port " + strconv.Itoa(port) + " is outside 1-65535"}
	}
	t, err := NormalizeHost(host)
	if err != nil {
		return Decision{Verdict: BadTarget, Reason: err.Error()}
	}
	if l == nil {
		l = &List{}
	}
	if t.IsAddr() {
		return l.judgeAddr(t.Addr, port, true)
	}
	return l.judgeName(t.Name, port)
}

// CheckAddr judges a resolved address of a name target that Decide allowed:
// deny rules and the always-blocked set apply, allow rules do not (the name
// was already allowed). A List with no allow rules refuses every address:
// Blocked when a deny rule or the always-blocked set refuses it, else
// Missing.
func (l *List) CheckAddr(addr netip.Addr, port int) Decision {
	if port < 1 || port > 65535 {
		return Decision{Verdict: BadTarget, Reason: "port " + strconv.Itoa(port) + " is outside 1-65535"}
	}
	if !addr.IsValid() {
		return Decision{Verdict: BadTarget, Reason: "the address is not valid"}
	}
	if l == nil {
		l = &List{}
	}
	return l.judgeAddr(addr, port, false)
}

func (l *List) judgeName(name string, port int) Decision {
	if r, _ := l.denyHosts.lookup(name, port); r != nil {
		return Decision{Verdict: Blocked, Rule: r.text, Reason: name + " matches " + r.text}
	}
	if len(l.allow) == 0 {
		return Decision{Verdict: Missing, Reason: reasonEmpty}
	}
	hit, nameOnly := l.allowHosts.lookup(name, port)
	switch {
	case hit != nil:
		return Decision{Verdict: Allowed, Rule: hit.text, Reason: hit.allowReason}
	case nameOnly != nil:
		return Decision{Verdict: Missing, Reason: name + " is named by " + nameOnly.text +
			" but port " + strconv.Itoa(port) + " is not in its ports"}
	default:
		return Decision{Verdict: Missing, Reason: "no allow host rule names " + name}
	}
}

// judgeAddr applies deny rules and the always-blocked set (built in and the
// customer's) to every form of addr and, when withAllow is set, the allow
// rules to the address dialed.
func (l *List) judgeAddr(addr netip.Addr, port int, withAllow bool) Decision {
	addr = addr.WithZone("")
	primary, extra, hasExtra := forms(addr)
	all := [2]form{primary, extra}
	fs := all[:1]
	if hasExtra {
		fs = all[:2]
	}
	for _, f := range fs {
		if r, _ := l.denyAddrs.lookup(f.addr, port); r != nil {
			return Decision{Verdict: Blocked, Rule: r.text, Reason: subject(addr, f) + " matches " + r.text}
		}
	}
	if d, blocked := l.judgeUnsafe(addr, fs, primary.addr, port); blocked {
		return d
	}
	switch {
	case len(l.allow) == 0:
		return Decision{Verdict: Missing, Reason: reasonEmpty}
	case !withAllow:
		return Decision{Verdict: Allowed, Reason: reasonAddrPass}
	}
	hit, addrOnly := l.allowAddrs.lookup(primary.addr, port)
	switch {
	case hit != nil:
		return Decision{Verdict: Allowed, Rule: hit.text, Reason: hit.allowReason}
	case addrOnly != nil:
		return Decision{Verdict: Missing, Reason: addr.String() + " is covered by " + addrOnly.text +
			" but port " + strconv.Itoa(port) + " is not in its ports"}
	default:
		return Decision{Verdict: Missing, Reason: "no allow ip or cidr rule covers " + addr.String()}
	}
}

// judgeUnsafe checks every form of addr against the always-blocked set.
// decided is false when no form is in it; otherwise d blocks addr, or
// allows it because an allow rule names the dialed address exactly with
// port.
func (l *List) judgeUnsafe(addr netip.Addr, fs []form, dialed netip.Addr, port int) (d Decision, decided bool) {
	for _, f := range fs {
		c, unsafe := classify(f.addr)
		if !unsafe {
			c, unsafe = l.customerClass(f.addr)
		}
		if !unsafe {
			continue
		}
		lift, liftOther := l.allowAddrs.exactAllow(dialed, port)
		if lift != nil {
			return Decision{Verdict: Allowed, Rule: lift.text,
				Reason: subject(addr, f) + " is " + c.desc + ", allowed because " + lift.text + " names it exactly"}, true
		}
		reason := subject(addr, f) + " is " + c.desc + " and no allow rule names it"
		if liftOther != nil {
			reason = subject(addr, f) + " is " + c.desc + " and " + liftOther.text +
				" names it but not port " + strconv.Itoa(port)
		}
		return Decision{Verdict: Blocked, Rule: c.rule, Reason: reason}, true
	}
	return Decision{}, false
}

// subject names the form of addr a reason is about.
func subject(addr netip.Addr, f form) string {
	if f.via == "" {
		return addr.String()
	}
	return addr.String() + " carries " + f.addr.String() + " (" + string(f.via) + "), which"
}
