package doctor

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/postern/postern/agent/config"
)

// egress is the proxy the agent would use to reach one relay URL.
type egress struct {
	url    *url.URL // nil: direct
	source string   // "egress_proxy", "HTTPS_PROXY", ...; or why there is none
}

// relayProxy picks the proxy as the agent's relay client does: egress_proxy
// when set, else HTTPS_PROXY (for wss://) or HTTP_PROXY (for ws://) unless
// NO_PROXY matches. Loopback relays never use an environment proxy.
func relayProxy(cfg *config.Config, getenv config.Getenv, relay *url.URL) (egress, error) {
	if cfg.EgressProxy != nil {
		return egress{url: cfg.EgressProxy, source: "egress_proxy"}, nil
	}
	env := func(names ...string) (string, string) {
		for _, n := range names {
			if v, ok := getenv(n); ok && v != "" {
				return v, n
			}
		}
		return "", ""
	}
	https, httpsName := env("HTTPS_PROXY", "https_proxy")
	plain, plainName := env("HTTP_PROXY", "http_proxy")
	noProxy, _ := env("NO_PROXY", "no_proxy")
	pc := httpproxy.Config{HTTPSProxy: https, HTTPProxy: plain, NoProxy: noProxy}
	u := *relay
	name := plainName
	switch u.Scheme {
	case "wss":
		u.Scheme, name = "https", httpsName
	case "ws":
		u.Scheme = "http"
	}
	p, err := pc.ProxyFunc()(&u)
	if err != nil {
		return egress{}, fmt.Errorf("%s: %w", name, err)
	}
	if p == nil {
		why := "direct connection (no egress_proxy, no HTTPS_PROXY)"
		switch {
		case name != "":
			why = "direct connection (NO_PROXY or a loopback relay excludes " + name + ")"
		case u.Scheme == "http":
			why = "direct connection (no egress_proxy, no HTTP_PROXY)"
		}
		return egress{source: why}, nil
	}
	return egress{url: p, source: name}, nil
}

// proxyAddr is the proxy's host:port, with the scheme's default port.
func proxyAddr(p *url.URL) string {
	if port := p.Port(); port != "" {
		return net.JoinHostPort(p.Hostname(), port)
	}
	switch p.Scheme {
	case "https":
		return net.JoinHostPort(p.Hostname(), "443")
	case "socks5", "socks5h":
		return net.JoinHostPort(p.Hostname(), "1080")
	}
	return net.JoinHostPort(p.Hostname(), "80")
}

// proxyOutcome is what one CONNECT through the proxy showed.
type proxyOutcome struct {
	conn   net.Conn // the tunnel to the relay, on success
	status int      // the proxy's answer; 0 if it never answered
	text   string   // the status line's text
	stage  string   // "connect" (TCP to the proxy), "tls" or "request"
	err    error
}

// connectProxy opens a TCP connection to the proxy (TLS for an https://
// proxy) and asks it to CONNECT to target, with Basic credentials when the
// proxy URL carries them.
func connectProxy(ctx context.Context, p *url.URL, target string, tr *trust, userAgent string) proxyOutcome {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxyAddr(p))
	if err != nil {
		return proxyOutcome{stage: "connect", err: err}
	}
	if p.Scheme == "https" {
		tc, _, err := tr.handshake(ctx, conn, p.Hostname())
		if err != nil {
			_ = conn.Close()
			return proxyOutcome{stage: "tls", err: err}
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: target},
		Host:   target,
		Header: http.Header{"User-Agent": {userAgent}},
	}
	if p.User != nil {
		pass, _ := p.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(p.User.Username() + ":" + pass))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return proxyOutcome{stage: "request", err: err}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = conn.Close()
		return proxyOutcome{stage: "request", err: fmt.Errorf("read the proxy's answer: %w", err)}
	}
	_ = resp.Body.Close()
	out := proxyOutcome{status: resp.StatusCode, text: resp.Status, stage: "request"}
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return out
	}
	_ = conn.SetDeadline(time.Time{})
	out.conn = &bufferedConn{Conn: conn, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), conn)}
	return out
}

// bufferedConn reads what the proxy sent after its answer before reading
// the connection itself.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// proxyCheck judges a CONNECT outcome. The proxy's password never appears.
func proxyCheck(p *url.URL, source, target string, o proxyOutcome) Check {
	where := "proxy " + proxyAddr(p) + " (from " + source + ")"
	switch {
	case o.stage == "connect":
		return fail(dialReason(o.err), where+": "+dialErrText(o.err),
			"check "+source+": nothing accepts connections at "+proxyAddr(p)+" from here")
	case o.stage == "tls":
		return fail("", where+": TLS to the proxy: "+o.err.Error(),
			"check the proxy's certificate, or add its CA with ca_file")
	case o.err != nil:
		return fail("", where+": CONNECT "+target+": "+o.err.Error(),
			"the proxy did not answer CONNECT; check that "+source+" names an HTTP proxy")
	case o.status == http.StatusOK:
		return pass(where + ": CONNECT " + target + " answered 200")
	case o.status == http.StatusProxyAuthRequired && p.User != nil:
		return fail("", where+": proxy requires authentication (407); it refused the credentials given",
			"check the user and password in "+source)
	case o.status == http.StatusProxyAuthRequired:
		return fail("", where+": proxy requires authentication (407)",
			"add the proxy's credentials to "+source+", as in http://USER:PASSWORD@"+proxyAddr(p))
	case o.status == http.StatusBadGateway || o.status == http.StatusServiceUnavailable || o.status == http.StatusGatewayTimeout:
		return fail("", where+": the proxy could not reach "+target+" ("+o.text+")",
			"check that the proxy may and can reach "+target)
	}
	return fail("", where+": CONNECT "+target+" refused ("+o.text+")",
		"ask the proxy's admin to allow CONNECT to "+target)
}
