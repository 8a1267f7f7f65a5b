package config

import (
	"strconv"
	"strings"

	"github.com/postern/postern/allowlist"
)

// compileRules turns allow and deny into RuleSpecs, each carrying its line,
// and compiles them. Each allowlist error is moved to its rule's line. A rule
// that already had a problem while decoding is left out of the report, so a
// mistyped ports list is not also reported as "ports missing".
func compileRules(fc *fileConfig, p *problems) (allow, deny []allowlist.RuleSpec, list *allowlist.List) {
	allow, deny = ruleSpecs(fc.Allow), ruleSpecs(fc.Deny)
	list, err := allowlist.Compile(allow, deny)
	if err == nil {
		return allow, deny, list
	}
	for _, e := range Problems(err) {
		r, where, rest := ruleOf(e.Error(), fc)
		switch {
		case r == nil:
			p.addCause(origin{}, e, "%s", e.Error())
		case !r.bad:
			p.addCause(origin{line: r.line}, e, "%s: %s", where, rest)
		}
	}
	return allow, deny, nil
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
