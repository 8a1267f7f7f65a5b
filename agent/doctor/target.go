package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// maxPortsPerRule bounds the ports probed for one allow rule; a range is
// probed at its first port.
const maxPortsPerRule = 3

// targetRun checks the targets of the allow rules from inside the customer
// network, as the agent would reach them: the agent's resolver, every
// address checked against the allowlist, TCP, and TLS on 443 and 8443.
// These checks are informational for the target side; they say what the
// cloud product will meet.
type targetRun struct {
	*runner
	cfg    *config.Config
	trust  *trust
	pol    *policy.Policy
	gate   *policy.Gate // nil when the resolver could not be built
	resErr error
}

func (r *runner) checkTargets(cfg *config.Config, tr *trust) {
	allow, _ := cfg.Rules.Specs()
	if len(allow) == 0 {
		return
	}
	res, err := resolve.New(resolve.Config{
		Servers:     cfg.DNSServers,
		Timeout:     cfg.DNSTimeout,
		MaxTTL:      -1,
		NegativeTTL: -1,
		Logger:      r.log,
	})
	tg := &targetRun{runner: r, cfg: cfg, trust: tr, pol: policy.New(cfg, time.Now()), resErr: err}
	if err == nil {
		tg.gate = policy.NewGate(tg.pol, res)
	}
	for _, spec := range allow {
		ports, more := probePorts(spec.Ports)
		switch {
		case strings.HasPrefix(spec.Host, "*."):
			tg.add(Check{Layer: LayerTargetDNS, Target: spec.Host, Status: Skip, Detail: fmt.Sprintf(
				"wildcard rule%s: no single name to check; `postern-agent validate --explain NAME:PORT` judges one name",
				lineNote(spec.Line))})
			continue
		case spec.Host != "":
			tg.checkHost(spec, ports)
		default:
			addr, ok := exactAddr(spec)
			if !ok {
				tg.add(Check{Layer: LayerTargetTCP, Target: spec.CIDR, Status: Skip,
					Detail: "address block" + lineNote(spec.Line) + ": no single address to probe"})
				continue
			}
			for _, p := range ports {
				tg.checkPort(addr.String(), []netip.Addr{addr}, p)
			}
		}
		if more > 0 {
			target := spec.Host + spec.IP + spec.CIDR
			tg.add(Check{Layer: LayerTargetTCP, Target: target, Status: Skip,
				Detail: fmt.Sprintf("%s not probed: doctor probes the first %d port entries of a rule", plural(more, "more port entry"), maxPortsPerRule)})
		}
	}
}

// checkHost resolves a host rule's name with the agent's resolver, checks
// every address as the agent would, then probes each port.
func (tg *targetRun) checkHost(spec allowlist.RuleSpec, ports []int) {
	name := spec.Host
	if len(ports) == 0 {
		return
	}
	if tg.resErr != nil {
		tg.add(Check{Layer: LayerTargetDNS, Target: name, Status: Fail, Detail: "resolver: " + tg.resErr.Error(),
			Remediation: "fix dns.servers in the config, or /etc/resolv.conf"})
		for _, p := range ports {
			tg.skipPort(net.JoinHostPort(name, strconv.Itoa(p)), p, LayerTargetDNS)
		}
		return
	}
	var usable []netip.Addr
	c := tg.step(LayerTargetDNS, name, func(ctx context.Context) Check {
		d := tg.gate.Resolve(ctx, name, ports[0])
		if d.Result == policy.Deny && d.Reason != protocol.TargetBlocked {
			return fail(d.Reason, d.Message, tg.dnsAdvice(d.Reason, name, spec.Line))
		}
		for _, ap := range d.Addrs {
			usable = append(usable, ap.Addr())
		}
		return judgeAddrs(name, d, answerNote(d.Answer))
	})
	for _, p := range ports {
		target := net.JoinHostPort(name, strconv.Itoa(p))
		if c.Status == Fail {
			tg.skipPort(target, p, LayerTargetDNS)
			continue
		}
		tg.checkPort(name, usable, p)
	}
}

// judgeAddrs reports the gate's checks of every resolved address: the
// agent dials only those it allows.
func judgeAddrs(name string, d policy.Decision, via string) Check {
	detail := joinAddrs(d.Found) + via
	switch {
	case d.Result == policy.Deny && len(d.Blocked) == 0:
		// A deny host rule names a name the lookup followed (a CNAME).
		return fail(protocol.TargetBlocked, detail+"; the agent refuses it: "+d.Message,
			"deny rules apply to every name on the CNAME chain; point "+name+" elsewhere or change the deny rule")
	case len(d.Blocked) == 0:
		return pass(detail)
	case d.Result == policy.Deny:
		return fail(protocol.TargetBlocked, detail+"; the agent refuses them all: "+d.Blocked[0].Why,
			"if "+name+" is meant to resolve there, add an ip rule naming that exact address; otherwise fix its DNS record")
	}
	why := make([]string, len(d.Blocked))
	for i, b := range d.Blocked {
		why[i] = b.Why
	}
	return Check{Status: Warn, Reason: protocol.TargetBlocked,
		Detail:      detail + "; some addresses will be skipped: " + strings.Join(why, "; "),
		Remediation: "nothing to do if the remaining addresses serve " + name}
}

// checkPort judges name:port with the allowlist, connects to the first
// usable address that answers, and runs TLS on 443 and 8443.
func (tg *targetRun) checkPort(name string, addrs []netip.Addr, port int) {
	target := net.JoinHostPort(name, strconv.Itoa(port))
	if d := tg.pol.Judge(name, port); d.Result != policy.Allow {
		st := Fail
		if d.Result == policy.Report {
			st = Warn
		}
		tg.add(Check{Layer: LayerTargetTCP, Target: target, Status: st, Reason: d.Reason,
			Detail:      "the allowlist refuses it: " + d.Message,
			Remediation: "another rule overrides this allow rule; remove the conflict"})
		if st == Fail {
			if tg.isTLSPort(port) {
				tg.add(skipped(LayerTargetTLS, target, LayerTargetTCP))
			}
			return
		}
	}
	aps := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		aps[i] = netip.AddrPortFrom(a, uint16(port))
	}
	var conn net.Conn
	c := tg.step(LayerTargetTCP, target, func(ctx context.Context) Check {
		cn, ap, err := dialFirst(ctx, aps)
		if err != nil {
			reason := dialReason(err)
			return fail(reason, err.Error(), tcpAdvice(reason, name, port))
		}
		conn = cn
		return pass("connected to " + ap.String())
	})
	if conn != nil {
		defer conn.Close()
	}
	if !tg.isTLSPort(port) {
		return
	}
	if c.Status == Fail {
		tg.add(skipped(LayerTargetTLS, target, LayerTargetTCP))
		return
	}
	tg.step(LayerTargetTLS, target, func(ctx context.Context) Check {
		tc, res, err := tg.trust.handshake(ctx, conn, name)
		if err != nil {
			return tlsFailure(res, err, name, false)
		}
		_ = tc.Close()
		detail := sniNote(name) + ", " + res.summary()
		if res.viaCAFile {
			detail += ", verified with ca_file " + tg.trust.caFile + " (the cloud product must trust this CA too)"
		} else {
			detail += ", verified with the system roots"
		}
		return pass(detail)
	})
}

// skipPort records the TCP (and TLS) checks of a port as skipped.
func (tg *targetRun) skipPort(target string, port int, cause string) {
	tg.add(skipped(LayerTargetTCP, target, cause))
	if tg.isTLSPort(port) {
		tg.add(skipped(LayerTargetTLS, target, cause))
	}
}

func (tg *targetRun) isTLSPort(p int) bool { return slices.Contains(tg.opts.tlsPorts, p) }

func (tg *targetRun) dnsAdvice(reason protocol.Reason, name string, line int) string {
	servers := "the servers in /etc/resolv.conf"
	if len(tg.cfg.DNSServers) > 0 {
		servers = strings.Join(tg.cfg.DNSServers, ", ")
	}
	switch reason {
	case protocol.DNSNXDomain:
		return "the agent's DNS (" + servers + ") does not know " + name + ": fix the allow rule" + lineNote(line) + " or add the record"
	case protocol.DNSServFail:
		return "the DNS server failed (SERVFAIL) for " + name + ": check " + servers
	case protocol.BadTarget:
		return "fix the host name of the allow rule" + lineNote(line)
	}
	return "no DNS server answered: check " + servers + " and that UDP and TCP 53 to them are open"
}

func tcpAdvice(reason protocol.Reason, name string, port int) string {
	p := strconv.Itoa(port)
	switch reason {
	case protocol.ConnectRefused:
		return "nothing accepts TCP " + p + " on " + name + ": check the service and the port in the allow rule"
	case protocol.ConnectTimeout:
		return "no answer: a firewall between the agent and " + name + " drops TCP " + p + ", or the host is down"
	}
	return "no route from the agent to " + name + ": check routing and firewalls"
}

func answerNote(a resolve.Answer) string {
	switch a.Source {
	case resolve.SourceHosts:
		return " (hosts file)"
	case resolve.SourceDNS, resolve.SourceCache:
		if a.Server != "" {
			return " (from " + a.Server + ")"
		}
	}
	return ""
}

// exactAddr returns the one address an ip rule, or a /32 or /128 cidr rule,
// names.
func exactAddr(spec allowlist.RuleSpec) (netip.Addr, bool) {
	if spec.IP != "" {
		a, err := netip.ParseAddr(spec.IP)
		return a, err == nil
	}
	p, err := netip.ParsePrefix(spec.CIDR)
	if err != nil || p.Bits() != p.Addr().BitLen() {
		return netip.Addr{}, false
	}
	return p.Addr(), true
}

// probePorts returns the port of each entry ("443", or a range's first
// port), at most maxPortsPerRule, and how many entries were left out.
func probePorts(entries []string) (ports []int, more int) {
	for _, e := range entries {
		lo, _, _ := strings.Cut(e, "-")
		p, ok := parsePort(strings.TrimSpace(lo))
		if !ok {
			continue
		}
		if len(ports) == maxPortsPerRule {
			more++
			continue
		}
		ports = append(ports, int(p))
	}
	return ports, more
}

func parsePort(s string) (uint16, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

func lineNote(line int) string {
	if line <= 0 {
		return ""
	}
	return fmt.Sprintf(" (line %d)", line)
}
