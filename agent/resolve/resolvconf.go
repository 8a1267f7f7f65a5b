package resolve

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Limits applied while reading resolv.conf. They follow glibc where glibc has a limit (three
// nameservers, ndots capped at 15) and bound everything else so a hostile or corrupt file
// cannot make the agent slow.
const (
	maxResolvConfSize = 64 << 10
	maxNameservers    = 3
	maxSearchDomains  = 32
	maxNdots          = 15
	maxTimeoutOption  = 30
	maxAttemptsOption = 5
)

// resolvConf is what the agent takes from a resolv.conf file. Zero values mean "not set".
type resolvConf struct {
	servers  []string // "ip:53", in file order
	search   []string // fully qualified, lower case
	ndots    int
	ndotsSet bool
	timeout  time.Duration
	attempts int
}

// parseResolvConf reads the nameserver, search, domain and options lines of a resolv.conf.
// Unknown lines and malformed values are ignored, as the C library does: a resolver that
// refuses to start over a typo in a system file would take the tunnel down with it.
func parseResolvConf(data []byte) resolvConf {
	if len(data) > maxResolvConfSize {
		data = data[:maxResolvConfSize]
	}
	var rc resolvConf
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) < 2 || len(rc.servers) >= maxNameservers {
				continue
			}
			ip, err := netip.ParseAddr(fields[1])
			if err != nil {
				continue
			}
			rc.servers = append(rc.servers, netip.AddrPortFrom(ip, 53).String())
		case "domain":
			// "domain" and "search" replace each other; the last one in the file wins.
			rc.search = nil
			if len(fields) >= 2 {
				rc.search = appendSearch(nil, fields[1])
			}
		case "search":
			rc.search = nil
			for _, d := range fields[1:] {
				rc.search = appendSearch(rc.search, d)
			}
		case "options":
			for _, opt := range fields[1:] {
				rc.applyOption(opt)
			}
		}
	}
	return rc
}

func (rc *resolvConf) applyOption(opt string) {
	key, val, ok := strings.Cut(opt, ":")
	if !ok {
		return
	}
	n, err := strconv.Atoi(val)
	if err != nil || n < 0 {
		return
	}
	switch key {
	case "ndots":
		rc.ndots, rc.ndotsSet = min(n, maxNdots), true
	case "timeout":
		rc.timeout = time.Duration(max(1, min(n, maxTimeoutOption))) * time.Second
	case "attempts":
		rc.attempts = max(1, min(n, maxAttemptsOption))
	}
}

// appendSearch adds one search domain, normalised to a lower-case FQDN, unless it is the root,
// invalid, a duplicate, or over the limit.
func appendSearch(list []string, domain string) []string {
	if len(list) >= maxSearchDomains {
		return list
	}
	d := strings.ToLower(strings.Trim(domain, "."))
	if d == "" || !validName(d) {
		return list
	}
	d = dns.Fqdn(d)
	for _, have := range list {
		if have == d {
			return list
		}
	}
	return append(list, d)
}

// validName reports whether name (without a trailing dot) is a plausible DNS name: printable
// ASCII without spaces or escapes, no empty labels, labels and name within the DNS limits.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' || c == '$' {
			return false
		}
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	_, ok := dns.IsDomainName(name + ".")
	return ok
}
