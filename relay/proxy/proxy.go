// Package proxy serves the cloud product's way in: an HTTP proxy listener
// that takes `CONNECT host:port` and plain http:// absolute-form requests
// with Proxy-Authorization naming a connection and an API key, carries
// each through a stream to one of the connection's agents, and answers
// every refusal with the reason table's status, Postern-Reason and JSON
// body.
//
// The agent judges the target; this package only checks that host and
// port are well formed.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/ratelimit"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
	"github.com/postern/postern/relay/store"
)

// Config configures the proxy.
type Config struct {
	// OpenTimeout bounds opening a stream and reading the agent's result
	// (resolve and connect happen inside it).
	OpenTimeout time.Duration
	// IdleTimeout ends a proxied stream with no traffic either way.
	IdleTimeout time.Duration
	// HeaderTimeout bounds reading a client connection's first request
	// head, a TLS handshake included, in front of net/http (see Front).
	HeaderTimeout time.Duration
	// RatePerKey caps proxy requests per API key, in requests per second;
	// 0 means no cap. Excess requests are answered 429 RATE_LIMITED.
	RatePerKey float64
	// BurstPerKey is how many requests a key may make at once within
	// RatePerKey; at least 1 when RatePerKey is set.
	BurstPerKey int
}

// Validate reports every setting out of range.
func (c Config) Validate() error {
	var errs []error
	if c.OpenTimeout <= 0 || c.IdleTimeout <= 0 || c.HeaderTimeout <= 0 {
		errs = append(errs, errors.New("open, idle and header timeouts must be positive"))
	}
	if c.RatePerKey < 0 || math.IsNaN(c.RatePerKey) || math.IsInf(c.RatePerKey, 0) {
		errs = append(errs, fmt.Errorf("proxy rate per key must be a finite number >= 0, not %v", c.RatePerKey))
	} else if c.RatePerKey > 0 && c.BurstPerKey < 1 {
		errs = append(errs, fmt.Errorf("proxy burst per key must be at least 1 with a proxy rate of %v", c.RatePerKey))
	}
	return errors.Join(errs...)
}

// Carried is told what each finished stream carried, in bytes.
type Carried func(toTarget, fromTarget int64)

// Proxy is the product's CONNECT proxy.
type Proxy struct {
	cfg     Config
	auth    *auth.Authenticator
	router  *router.Router
	rate    *ratelimit.Limiter // nil when off
	carried Carried
	log     *slog.Logger
	apiAddr atomic.Pointer[string]
	rp      *httputil.ReverseProxy // forwards http:// requests
	clients sync.Map               // net.Conn -> *upstreams, for ConnState
	streams sync.WaitGroup         // data phases of CONNECTs; see Close
	conns   sync.WaitGroup         // the front's connections; see Front
	life    context.Context        // ends at Close: no data phase starts after
	end     context.CancelFunc
	closeMu sync.Mutex // orders start's Add before Close's Wait
}

// New returns the proxy; carried may be nil.
func New(cfg Config, a *auth.Authenticator, r *router.Router, carried Carried, log *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	p := &Proxy{cfg: cfg, auth: a, router: r, carried: carried, log: log}
	p.life, p.end = context.WithCancel(context.Background())
	p.rp = p.reverseProxy()
	if cfg.RatePerKey > 0 {
		p.rate = ratelimit.New(cfg.RatePerKey, cfg.BurstPerKey, ratelimit.MaxKeys, nil)
	}
	if p.carried == nil {
		p.carried = func(int64, int64) {}
	}
	return p, nil
}

// ServeHTTP authenticates the request, takes it from the key's rate, and
// carries it while the key stays valid. Every refusal names its reason in
// the status line.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e := p.notProxied(r); e != nil {
		reply.Refuse(w, r, e)
		return
	}
	conn, key, e := p.auth.Proxy(r)
	if e == nil {
		e = p.admit(key.ID)
	}
	if e != nil {
		reply.Refuse(w, r, p.bearerHint(r.Header.Get("Proxy-Authorization"), e))
		return
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r, conn, key)
		return
	}
	// The key's revocation, or its expiry, ends the request at once.
	ctx, release := p.auth.Hold(r.Context(), key)
	defer release()
	p.forward(w, r.WithContext(ctx), conn, key)
}

// notProxied refuses, before any credential is asked for, a request this
// listener cannot carry: a CONNECT whose target is not plain host:port,
// and a request that is not for another server at all, which most often
// is an API call sent to the proxy port.
func (p *Proxy) notProxied(r *http.Request) *protocol.Error {
	switch {
	case r.Method == http.MethodConnect:
		return CheckTarget(r.RequestURI)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		return nil
	case r.URL.IsAbs():
		return protocol.Errorf(protocol.InvalidRequest, "the proxy forwards plain http:// URLs; for https:// use CONNECT host:port (any client does when told to use this proxy)")
	}
	return protocol.Errorf(protocol.InvalidRequest,
		"this is the proxy listener (CONNECT host:port or an absolute http:// URL); %s %s looks like an API call, and the API is on %s", r.Method, clipPath(r.URL.Path), p.apiListen())
}

// bearerHint adds to a refused Proxy-Authorization: Bearer (authz), the
// API's scheme, which scheme the proxy takes and where the API is.
func (p *Proxy) bearerHint(authz string, e *protocol.Error) *protocol.Error {
	if e.Reason != protocol.ProxyAuthRequired || !strings.HasPrefix(authz, "Bearer ") {
		return e
	}
	return protocol.Errorf(e.Reason, "%s; Bearer <api key> is the API's scheme, and the API is on %s", e.Message, p.apiListen())
}

// apiListen names the API listener: its flag and, once known, address.
func (p *Proxy) apiListen() string {
	if a := p.apiAddr.Load(); a != nil {
		return "--listen (" + *a + ")"
	}
	return "--listen"
}

// SetAPIAddr names the API listener's address in the answer to an API
// call sent to the proxy port.
func (p *Proxy) SetAPIAddr(addr string) { p.apiAddr.Store(&addr) }

func clipPath(path string) string {
	if len(path) > 64 {
		return path[:64] + "…"
	}
	return path
}

// admit takes one request from the key's proxy rate.
func (p *Proxy) admit(keyID string) *protocol.Error {
	if p.rate == nil {
		return nil
	}
	wait, ok := p.rate.Take(keyID)
	if ok {
		return nil
	}
	e := protocol.Errorf(protocol.RateLimited, "API key %s is over its proxy rate of %g requests per second", keyID, p.cfg.RatePerKey)
	e.RetryAfter = max(1, int(math.Ceil(wait.Seconds())))
	return e
}

// SplitTarget splits host:port; the port must be 1-65535 without sign or
// leading zeros and the host at most 255 bytes, else BAD_TARGET. The agent
// judges the host itself.
func SplitTarget(hostport string) (string, int, *protocol.Error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return "", 0, protocol.Errorf(protocol.BadTarget, "target %q is not host:port", hostport)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != p {
		return "", 0, protocol.Errorf(protocol.BadTarget, "target port %q is not 1-65535", p)
	}
	if len(host) > protocol.MaxHostLen {
		return "", 0, protocol.Errorf(protocol.BadTarget, "target host is too long")
	}
	return host, port, nil
}

// dial asks one of the connection's agents to dial host:port and returns
// the stream, ready for the data phase.
func (p *Proxy) dial(ctx context.Context, conn store.Connection, host string, port int, reqID string) (router.Stream, *protocol.Error) {
	st, _, e := p.router.Ask(ctx, conn, protocol.Request{Op: protocol.OpDial, ID: reqID, Host: host, Port: port}, p.cfg.OpenTimeout)
	return st, e
}
