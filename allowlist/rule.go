package allowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrBadRule reports a rule that does not compile. Every error from Compile
// wraps it.
var ErrBadRule = errors.New("bad rule")

// RuleSpec is one rule as written in config or as reported on the wire.
// Exactly one of Host, IP and CIDR is set.
type RuleSpec struct {
	// Host is an exact name ("gitlab.corp.example") or a wildcard
	// ("*.corp.example") matching every name strictly below the suffix.
	Host string
	// IP is one address, IPv4 or IPv6 ("10.0.0.7", "fd00::1").
	IP string
	// CIDR is an address block with no host bits set ("10.20.0.0/16").
	CIDR string
	// Ports lists single ports ("443") and inclusive ranges ("8000-8100").
	// Allow rules must list ports; on a deny rule an empty list means every
	// port.
	Ports []string
	// Line is the rule's line in its source file, for messages; 0 if unknown.
	Line int
}

type ruleKind uint8

const (
	kindHost ruleKind = iota + 1
	kindWildcard
	kindIP
	kindCIDR
)

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

// portSet is a sorted list of disjoint ranges; nil means every port.
type portSet []portRange

func (s portSet) contains(port int) bool {
	if s == nil {
		return true
	}
	for _, r := range s {
		if port >= int(r.lo) && port <= int(r.hi) {
			return true
		}
	}
	return false
}

func (s portSet) strings() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s))
	for i, r := range s {
		out[i] = strconv.Itoa(int(r.lo))
		if r.hi != r.lo {
			out[i] += "-" + strconv.Itoa(int(r.hi))
		}
	}
	return out
}

// rule is one compiled rule.
type rule struct {
	index  int // position in its list (allow or deny)
	deny   bool
	kind   ruleKind
	name   string       // exact name, or the suffix of a wildcard without "*."
	prefix netip.Prefix // ip rules are full-length prefixes
	ports  portSet
	spec   RuleSpec // normalized
	text   string   // "allow host=*.corp.example ports=443"
	// allowReason is the precomputed Reason for an Allowed decision, so the
	// hot path does not format strings.
	allowReason string
}

// compileRule validates one spec. It returns every problem found in it.
func compileRule(spec RuleSpec, index int, deny bool) (*rule, []error) {
	list := "allow"
	if deny {
		list = "deny"
	}
	where := fmt.Sprintf("%s[%d]", list, index)
	if spec.Line > 0 {
		where += fmt.Sprintf(" (line %d)", spec.Line)
	}
	r := &rule{index: index, deny: deny, spec: RuleSpec{Line: spec.Line}}
	var errs []error
	fail := func(field, value, why string) {
		if field == "" {
			errs = append(errs, fmt.Errorf("%s: %w: %s", where, ErrBadRule, why))
			return
		}
		if value == "" {
			errs = append(errs, fmt.Errorf("%s: %s: %w: %s", where, field, ErrBadRule, why))
			return
		}
		errs = append(errs, fmt.Errorf("%s: %s %q: %w: %s", where, field, value, ErrBadRule, why))
	}

	var set []string
	for _, f := range []struct{ name, value string }{{"host", spec.Host}, {"ip", spec.IP}, {"cidr", spec.CIDR}} {
		if f.value != "" {
			set = append(set, f.name)
		}
	}
	switch {
	case len(set) == 0:
		fail("", "", "set exactly one of host, ip and cidr")
	case len(set) > 1:
		fail("", "", strings.Join(set, " and ")+" are set; set exactly one of host, ip and cidr")
	case spec.Host != "":
		if err := r.parseHost(spec.Host); err != nil {
			fail("host", spec.Host, err.Error())
		}
	case spec.IP != "":
		if err := r.parseIP(spec.IP); err != nil {
			fail("ip", spec.IP, err.Error())
		}
	default:
		if err := r.parseCIDR(spec.CIDR); err != nil {
			fail("cidr", spec.CIDR, err.Error())
		}
	}

	switch {
	case len(spec.Ports) == 0 && !deny:
		fail("ports", "", "allow rules must list ports, as in [443] or [\"8000-8100\"]")
	case len(spec.Ports) > 0:
		ports := make(portSet, 0, len(spec.Ports))
		for i, p := range spec.Ports {
			pr, err := parsePortRange(p)
			if err != nil {
				fail(fmt.Sprintf("ports[%d]", i), p, err.Error())
				continue
			}
			ports = append(ports, pr)
		}
		r.ports = mergePorts(ports)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	r.spec.Ports = r.ports.strings()
	r.text = r.render()
	r.allowReason = "the target and port match " + r.text
	return r, nil
}

func (r *rule) parseHost(h string) error {
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") > 1 {
		return errors.New("this is an IP address; use an ip or cidr rule")
	}
	if strings.IndexByte(h, '/') >= 0 {
		return errors.New("this is not a host name; use a cidr rule for address blocks")
	}
	if digitsAndDots(h) {
		return errors.New("this is an IPv4 address or numeric form; use an ip rule with four decimal octets")
	}
	r.kind = kindHost
	name := h
	if strings.HasPrefix(h, "*.") {
		r.kind = kindWildcard
		name = h[2:]
	}
	if strings.IndexByte(name, '*') >= 0 || h == "*" {
		return errors.New(`a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`)
	}
	norm, err := normalizeName(name)
	if err != nil {
		return err
	}
	r.name = norm
	r.spec.Host = norm
	if r.kind == kindWildcard {
		r.spec.Host = "*." + norm
	}
	return nil
}

func (r *rule) parseIP(s string) error {
	if strings.IndexByte(s, '/') >= 0 {
		return errors.New("this is an address block; use a cidr rule")
	}
	if strings.IndexByte(s, '%') >= 0 {
		return errors.New("IPv6 zone ids are not accepted")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return errors.New("not an IP address (IPv4 as four decimal octets without leading zeros, or IPv6)")
	}
	addr = addr.Unmap()
	r.kind = kindIP
	r.prefix = netip.PrefixFrom(addr, addr.BitLen())
	r.spec.IP = addr.String()
	return nil
}

func (r *rule) parseCIDR(s string) error {
	if strings.IndexByte(s, '%') >= 0 {
		return errors.New("IPv6 zone ids are not accepted")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return errors.New("not a CIDR block such as 10.20.0.0/16 or fd00::/8")
	}
	if m := p.Masked(); m != p {
		return fmt.Errorf("host bits are set; the block is %s", m)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		// An IPv4-mapped block is the IPv4 block it maps.
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	r.kind = kindCIDR
	r.prefix = p
	r.spec.CIDR = p.String()
	return nil
}

// parsePortRange parses "443" or "8000-8100" strictly: decimal digits only,
// no sign, no leading zero, no spaces, 1-65535, low end first.
func parsePortRange(s string) (portRange, error) {
	loText, hiText, isRange := strings.Cut(s, "-")
	lo, err := parsePort(loText)
	if err != nil {
		return portRange{}, err
	}
	if !isRange {
		return portRange{lo, lo}, nil
	}
	hi, err := parsePort(hiText)
	if err != nil {
		return portRange{}, err
	}
	if hi < lo {
		return portRange{}, fmt.Errorf("range runs backwards; write %d-%d", hi, lo)
	}
	return portRange{lo, hi}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("a port must be a number 1-65535 or a range such as 8000-8100")
	}
	if len(s) > 5 {
		return 0, errors.New("port is outside 1-65535")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("a port must be a number 1-65535 or a range such as 8000-8100")
		}
		n = n*10 + int(c-'0')
	}
	if s[0] == '0' && len(s) > 1 {
		return 0, errors.New("a port must not have a leading zero")
	}
	if n < 1 || n > 65535 {
		return 0, errors.New("port is outside 1-65535")
	}
	return uint16(n), nil
}

// mergePorts sorts ranges and merges overlapping ones, so equal sets of
// ports render the same way.
func mergePorts(in portSet) portSet {
	slices.SortFunc(in, func(a, b portRange) int { return int(a.lo) - int(b.lo) })
	out := in[:0]
	for _, r := range in {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// render is the rule's canonical text, used in decisions and in the hash.
func (r *rule) render() string {
	var b strings.Builder
	if r.deny {
		b.WriteString("deny ")
	} else {
		b.WriteString("allow ")
	}
	switch r.kind {
	case kindHost, kindWildcard:
		b.WriteString("host=" + r.spec.Host)
	case kindIP:
		b.WriteString("ip=" + r.spec.IP)
	case kindCIDR:
		b.WriteString("cidr=" + r.spec.CIDR)
	}
	b.WriteString(" ports=")
	if r.ports == nil {
		b.WriteString("*")
	} else {
		b.WriteString(strings.Join(r.spec.Ports, ","))
	}
	return b.String()
}
