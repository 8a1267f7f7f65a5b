package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// compileRules turns allow, deny and blocked into specs, each carrying its
// line, and compiles them. Each allowlist error is moved to its rule's or
// entry's line. A rule that already had a problem while decoding is left
// out of the report, so a mistyped ports list is not also reported as
// "ports missing".
func compileRules(fc *fileConfig, p *problems) (rs allowlist.Rules, list *allowlist.List) {
	checkHostSchemes("allow", fc.Allow, p)
	checkHostSchemes("deny", fc.Deny, p)
	rs = allowlist.Rules{Allow: ruleSpecs(fc.Allow), Deny: ruleSpecs(fc.Deny), Blocked: blockedSpecs(fc.Blocked)}
	list, err := allowlist.CompileRules(rs)
	if err == nil {
		if msg := overSummaryBounds(list); msg != "" {
			p.add(origin{}, "%s", msg)
			return rs, nil
		}
		return rs, list
	}
	for _, e := range Problems(err) {
		if b, rest, ok := blockedOf(e.Error(), fc); ok {
			p.addCause(b.from, e, "blocked[%d]: %s", b.index, rest)
			continue
		}
		r, where, rest := ruleOf(e.Error(), fc)
		switch {
		case r == nil:
			p.addCause(origin{}, e, "%s", e.Error())
		case !r.bad:
			p.addCause(ruleLine(r, rest), e, "%s: %s", where, rest)
		}
	}
	return rs, nil
}

// overSummaryBounds says why list is too large for the summary the agent
// reports to the relay (which would end every tunnel), or "".
func overSummaryBounds(list *allowlist.List) string {
	allow, deny := list.Specs()
	if n := len(allow) + len(deny) + len(list.Blocked()); n > protocol.MaxSummaryRules {
		return fmt.Sprintf("%d allow rules, deny rules and blocked entries: the relay accepts at most %d; merge rules (a cidr: covers many addresses, a ports range many ports)", n, protocol.MaxSummaryRules)
	}
	ports := 0
	for _, r := range slices.Concat(allow, deny) {
		ports += len(r.Ports)
	}
	if ports > protocol.MaxSummaryPorts {
		return fmt.Sprintf("%d port entries in the rules: the relay accepts at most %d; use ranges (\"8000-8100\")", ports, protocol.MaxSummaryPorts)
	}
	return ""
}

func blockedSpecs(l blockedList) []allowlist.BlockedSpec {
	if len(l.entries) == 0 {
		return nil
	}
	specs := make([]allowlist.BlockedSpec, len(l.entries))
	for i, b := range l.entries {
		specs[i] = allowlist.BlockedSpec{Addr: b.value, Line: b.from.line}
	}
	return specs
}

// blockedOf finds the blocked entry an allowlist error is about. The
// allowlist names it by its place among the entries it was given
// ("blocked[0] (line 9): ..."), which differs from its index in the file
// when an entry before it was not a string.
func blockedOf(msg string, fc *fileConfig) (b blockedEntry, rest string, ok bool) {
	r, rest, ok := strings.Cut(msg, "blocked[")
	if !ok || r != "" {
		return blockedEntry{}, "", false
	}
	num, _, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(num)
	if !ok || err != nil || i < 0 || i >= len(fc.Blocked.entries) {
		return blockedEntry{}, "", false
	}
	_, rest, ok = strings.Cut(msg, ": ")
	return fc.Blocked.entries[i], rest, ok
}

func ruleSpecs(rules []fileRule) []allowlist.RuleSpec {
	if len(rules) == 0 {
		return nil
	}
	specs := make([]allowlist.RuleSpec, len(rules))
	for i, r := range rules {
		specs[i] = allowlist.RuleSpec{
			Host:  r.Host.value,
			IP:    r.IP.value,
			CIDR:  r.CIDR.value,
			Ports: r.Ports.values,
			Line:  r.line,
		}
	}
	return specs
}

// ruleOf finds the rule an allowlist error is about. The allowlist names a
// rule as "allow[3] (line 7): ..."; ruleOf returns that rule, "allow[3]" and
// the text after the position, or nil if msg names no rule of fc.
func ruleOf(msg string, fc *fileConfig) (r *fileRule, where, rest string) {
	head, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return nil, "", ""
	}
	where, _, _ = strings.Cut(head, " ")
	name, num, ok := strings.Cut(strings.TrimSuffix(where, "]"), "[")
	if !ok {
		return nil, "", ""
	}
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 {
		return nil, "", ""
	}
	switch {
	case name == "allow" && i < len(fc.Allow):
		return &fc.Allow[i], where, rest
	case name == "deny" && i < len(fc.Deny):
		return &fc.Deny[i], where, rest
	}
	return nil, "", ""
}

// ruleLine is where a rule's problem is reported: the ports: line for a
// problem with its ports, else the rule's first line.
func ruleLine(r *fileRule, rest string) origin {
	if strings.HasPrefix(rest, "ports") && r.Ports.from.line > 0 {
		return r.Ports.from
	}
	return origin{line: r.line}
}

// checkHostSchemes reports a host written as a URL (https://gitlab.corp/x):
// a rule names a host, and the port goes in ports.
func checkHostSchemes(section string, rules []fileRule, p *problems) {
	for i := range rules {
		r := &rules[i]
		scheme, rest, ok := strings.Cut(r.Host.value, "://")
		if r.bad || !ok {
			continue
		}
		host, _, _ := strings.Cut(rest, "/")
		if at := strings.LastIndexByte(host, '@'); at >= 0 {
			host = host[at+1:]
		}
		p.add(r.Host.from, "%s[%d]: host %s is a URL; drop the scheme %s:// (and any path): write host: %s",
			section, i, quote(scheme+"://"+host), scheme, quote(host))
		r.bad = true
	}
}
