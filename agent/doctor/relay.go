package doctor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol"
)

// relayRun walks the path to one relay URL over a single connection: DNS,
// proxy, TCP, TLS, WebSocket upgrade, token, Hello/Welcome. failed names the
// first layer that failed; every layer after it is skipped.
type relayRun struct {
	*runner
	cfg    *config.Config
	trust  *trust
	u      *url.URL
	host   string
	target string // host:port
	conn   net.Conn
	failed string
}

func (rr *relayRun) skip(layer string) { rr.add(skipped(layer, rr.target, rr.failed)) }

// checkRelay runs every relay layer for one relay_url.
func (r *runner) checkRelay(cfg *config.Config, tr *trust, u *url.URL, token string, tokenOK bool) {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "ws" {
			port = "80"
		}
	}
	rr := &relayRun{runner: r, cfg: cfg, trust: tr, u: u, host: u.Hostname()}
	rr.target = net.JoinHostPort(rr.host, port)
	defer func() {
		if rr.conn != nil {
			_ = rr.conn.Close()
		}
	}()

	eg, egErr := relayProxy(cfg, r.opts.Getenv, u)
	addrs := rr.checkDNS(eg.url != nil, port)
	rr.connect(eg, egErr, addrs)
	rr.checkTLS()

	if rr.failed == "" && !tokenOK {
		rr.failed = LayerToken
	}
	if rr.failed != "" {
		rr.skip(LayerWebSocket)
		rr.skip(LayerRelayAuth)
		rr.skip(LayerRelaySession)
		return
	}
	rr.checkTunnel(token)
}

// checkDNS resolves the relay's host with the system resolver, as the
// agent's dialer does. Through a proxy, the proxy resolves the name, so a
// local failure is only a warning.
func (rr *relayRun) checkDNS(proxied bool, port string) []netip.AddrPort {
	p, _ := parsePort(port)
	if ip, err := netip.ParseAddr(rr.host); err == nil {
		rr.add(Check{Layer: LayerRelayDNS, Target: rr.target, Status: Pass, Detail: "IP address; nothing to resolve"})
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), p)}
	}
	var found []netip.Addr
	c := rr.step(LayerRelayDNS, rr.target, func(ctx context.Context) Check {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", rr.host)
		if err != nil {
			reason := systemDNSReason(err)
			if proxied {
				return Check{Status: Warn, Reason: reason,
					Detail:      "not resolvable from here (" + err.Error() + "); the egress proxy resolves it",
					Remediation: "nothing to do if the proxy reaches the relay; otherwise check this machine's DNS"}
			}
			return fail(reason, err.Error(), systemDNSAdvice(reason, rr.host))
		}
		found = ips
		return pass(joinAddrs(ips))
	})
	if c.Status == Fail {
		rr.failed = LayerRelayDNS
	}
	out := make([]netip.AddrPort, 0, len(found))
	for _, ip := range found {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), p))
	}
	return out
}

// connect opens the connection to the relay: through the proxy, or
// directly to the resolved addresses.
func (rr *relayRun) connect(eg egress, egErr error, addrs []netip.AddrPort) {
	switch {
	case egErr != nil:
		rr.add(Check{Layer: LayerEgressProxy, Target: rr.target, Status: Fail, Detail: egErr.Error(),
			Remediation: "fix the proxy URL in the environment, or set egress_proxy"})
		rr.failed = LayerEgressProxy
		rr.skip(LayerRelayTCP)
		return
	case eg.url == nil:
		rr.add(Check{Layer: LayerEgressProxy, Target: rr.target, Status: Skip, Detail: "not used: " + eg.source})
	case strings.HasPrefix(eg.url.Scheme, "socks"):
		rr.add(Check{Layer: LayerEgressProxy, Target: rr.target, Status: Warn,
			Detail:      "SOCKS proxy " + proxyAddr(eg.url) + " (from " + eg.source + ") is not checked by doctor",
			Remediation: "check the relay path with the agent's log instead"})
		rr.failed = LayerEgressProxy
		rr.skip(LayerRelayTCP)
		return
	case rr.failed != "":
		rr.skip(LayerEgressProxy)
	default:
		var out proxyOutcome
		c := rr.step(LayerEgressProxy, rr.target, func(ctx context.Context) Check {
			out = connectProxy(ctx, eg.url, rr.target, rr.trust, "postern-agent/"+rr.opts.Version)
			return proxyCheck(eg.url, eg.source, rr.target, out)
		})
		if c.Status != Pass {
			rr.failed = LayerEgressProxy
			rr.skip(LayerRelayTCP)
			return
		}
		rr.conn = out.conn
		rr.add(Check{Layer: LayerRelayTCP, Target: rr.target, Status: Pass, Duration: c.Duration, timed: true,
			Detail: "connected through the egress proxy (CONNECT answered 200)"})
		return
	}
	if rr.failed != "" {
		rr.skip(LayerRelayTCP)
		return
	}
	c := rr.step(LayerRelayTCP, rr.target, func(ctx context.Context) Check {
		conn, ap, err := dialFirst(ctx, addrs)
		if err != nil {
			return fail(dialReason(err), err.Error(),
				"check that the relay is up and that outbound TCP "+portOf(rr.target)+" to "+rr.host+" is allowed by your firewall")
		}
		rr.conn = conn
		return pass("connected to " + ap.String())
	})
	if c.Status == Fail {
		rr.failed = LayerRelayTCP
	}
}

// checkTLS runs the TLS handshake for wss:// and verifies the relay's
// certificate as the agent would, showing who issued it.
func (rr *relayRun) checkTLS() {
	switch {
	case rr.u.Scheme == "ws":
		rr.add(Check{Layer: LayerRelayTLS, Target: rr.target, Status: Skip,
			Detail: "not used: ws:// is unencrypted (allowed to a loopback relay only)"})
		return
	case rr.failed != "":
		rr.skip(LayerRelayTLS)
		return
	}
	c := rr.step(LayerRelayTLS, rr.target, func(ctx context.Context) Check {
		tc, res, err := rr.trust.handshake(ctx, rr.conn, rr.host)
		if err != nil {
			return tlsFailure(res, err, rr.host, true)
		}
		rr.conn = tc
		detail := sniNote(rr.host) + ", " + res.summary() + ", verified with the system roots"
		if res.viaCAFile {
			detail = sniNote(rr.host) + ", " + res.summary() + ", verified with ca_file " + rr.trust.caFile +
				" (if " + issuerName(res.leaf) + " is your proxy's CA, TLS to the relay is being inspected)"
		}
		return pass(detail)
	})
	if c.Status == Fail {
		rr.failed = LayerRelayTLS
	}
}

// systemDNSReason maps a system resolver error to a reason code.
func systemDNSReason(err error) protocol.Reason {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return protocol.DNSNXDomain
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return protocol.DNSTimeout
	}
	return protocol.DNSServFail
}

func systemDNSAdvice(reason protocol.Reason, host string) string {
	switch reason {
	case protocol.DNSNXDomain:
		return "this machine's DNS does not know " + host + ": check relay_url's spelling and your DNS"
	case protocol.DNSTimeout:
		return "this machine's DNS servers (see /etc/resolv.conf) did not answer: check them"
	}
	return "this machine's DNS failed to resolve " + host + ": check /etc/resolv.conf and the DNS servers"
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.Unmap().String()
	}
	return strings.Join(s, ", ")
}

func portOf(hostport string) string {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return p
}
