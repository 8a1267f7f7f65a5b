package provider

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/allowlist"
)

// privateRanges are the addresses a cloud provider is never at, on top of
// the allowlist's always-blocked set (loopback, link-local and metadata,
// multicast, ...): private, shared (CGNAT) and benchmarking networks, and
// unique-local IPv6. They are data for allowlist deny rules; the checks
// themselves are the allowlist's, IPv4 hidden in IPv6 included.
var privateRanges = []string{
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15",
	"192.0.0.0/24", "240.0.0.0/4", "fc00::/7", "fec0::/10",
}

// publicAddresses is an allowlist that admits every public address and
// nothing else.
func publicAddresses() (*allowlist.List, error) {
	var deny []allowlist.RuleSpec
	for _, cidr := range privateRanges {
		deny = append(deny, allowlist.RuleSpec{CIDR: cidr})
	}
	all := []string{"1-65535"}
	return allowlist.Compile([]allowlist.RuleSpec{{CIDR: "0.0.0.0/0", Ports: all}, {CIDR: "::/0", Ports: all}}, deny)
}

// checkBaseURL is the first step: the URL's form, the deployment mode, the
// provider's host and, for cloud, every address the host resolves to.
func (r *run) checkBaseURL(ctx context.Context) bool {
	if detail := r.parseBaseURL(); detail != "" {
		return r.fail(StepBaseURL, CodeBaseURLBlocked, detail)
	}
	if detail := r.spec.modeProblem(r.req.Mode, r.host); detail != "" {
		return r.fail(StepBaseURL, CodeBaseURLBlocked, detail)
	}
	r.api = r.spec.apiRoot(r.base, r.req.Mode)
	if r.req.Mode == ModeSelfHosted {
		return r.pass(StepBaseURL, r.spec.name+" self-hosted at "+r.hostPort()+"; reached through Postern connection "+r.req.Connection)
	}
	ctx, cancel := r.stepContext(ctx)
	defer cancel()
	addrs, code, detail := r.resolvePublic(ctx, r.host, r.port)
	if code != "" {
		return r.fail(StepBaseURL, code, detail)
	}
	r.useTransport(r.cloudTransport())
	return r.pass(StepBaseURL, r.spec.name+" cloud at "+r.hostPort()+", public address "+joinAddrs(addrs))
}

// parseBaseURL checks the URL's form and sets base, host and port; it
// returns why the URL cannot be used, or "".
func (r *run) parseBaseURL() string {
	u, err := url.Parse(r.req.BaseURL)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return "base URL " + strconv.Quote(clip(r.req.BaseURL, 100)) + " is not an absolute URL"
	case u.Scheme != "https" && (u.Scheme != "http" || r.req.Mode == ModeCloud):
		if r.req.Mode == ModeCloud {
			return "a cloud base URL must use https, not " + strconv.Quote(clip(u.Scheme, 20))
		}
		return "base URL scheme must be https or http, not " + strconv.Quote(clip(u.Scheme, 20))
	case u.User != nil:
		return "base URL must not carry user info; the credential is given separately"
	case u.RawQuery != "" || u.Fragment != "":
		return "base URL must not have a query or fragment"
	}
	t, err := allowlist.NormalizeHost(u.Hostname())
	if err != nil {
		return "base URL host: " + err.Error()
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return "base URL port " + strconv.Quote(clip(p, 10)) + " is not 1-65535"
		}
		port = n
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	r.base, r.host, r.port = u, t.String(), port
	return ""
}

func (r *run) hostPort() string { return net.JoinHostPort(r.host, strconv.Itoa(r.port)) }

// resolvePublic resolves host and checks every address with the public
// allowlist; a code says why the host cannot be used.
func (r *run) resolvePublic(ctx context.Context, host string, port int) ([]netip.Addr, string, string) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		found, err := r.c.cfg.Resolve(ctx, host)
		if err != nil {
			return nil, CodeBaseURLUnreachable, "resolve " + host + ": " + err.Error()
		}
		if len(found) == 0 {
			return nil, CodeBaseURLUnreachable, "resolve " + host + ": no addresses"
		}
		addrs = found
	}
	for _, a := range addrs {
		if d := r.c.public.CheckAddr(a.Unmap(), port); !d.Allowed() {
			return nil, CodeBaseURLBlocked, host + " is not a public address: " + d.Reason
		}
	}
	return addrs, "", ""
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, 0, len(addrs))
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

// cloudTransport dials cloud providers safely: it resolves the host again
// at dial time, checks every address, and dials only an address it
// checked, so a DNS answer that changed since the base URL step cannot
// point the credential at a private address.
func (r *run) cloudTransport() *http.Transport {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("dial %s: bad port", addr)
		}
		addrs, code, detail := r.resolvePublic(ctx, host, port)
		if code != "" {
			return nil, fmt.Errorf("dial %s: %s", addr, detail)
		}
		var last error
		for _, a := range addrs {
			conn, err := r.c.cfg.DialAddr(ctx, netip.AddrPortFrom(a.Unmap(), uint16(port)))
			if err == nil {
				return conn, nil
			}
			last = err
		}
		return nil, last
	}
	return &http.Transport{
		Proxy: nil, DialContext: dial, TLSClientConfig: r.tlsConfig(), ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: r.c.cfg.StepTimeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
}
