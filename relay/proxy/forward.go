package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/store"
)

// Plain http:// requests are forwarded as a forward proxy does: the
// upstream connection (a stream to the agent, then to the target) is kept
// after the answer and used again by the next request of the same client
// connection for the same Postern connection, API key and target, so a
// keep-alive client costs one stream and one target connection, not one
// per request. Every request is still authenticated and taken from the
// key's rate before it may use one. A revoked connection cuts its tunnels
// and with them every upstream; a revoked or expired key ends the request
// in flight and closes the idle upstreams opened with it. An idle upstream
// is also closed with the client connection, after upstreamIdle, or when
// the tunnel under it goes.
const (
	// upstreamIdle closes an upstream connection no request used for
	// this long.
	upstreamIdle = 90 * time.Second
	// maxIdlePerTarget bounds the idle upstreams of one client connection
	// to one target; an HTTP/1 client sends one request at a time on a
	// connection, so one is the usual number.
	maxIdlePerTarget = 2
	// maxIdlePerTransport bounds the idle upstreams of one client
	// connection for one Postern connection and key, all targets together.
	maxIdlePerTransport = 4
	// maxTransportsPerClient bounds how many Postern connections (and
	// keys) one client connection keeps upstreams for; a further one
	// closes the others' first.
	maxTransportsPerClient = 8
)

// upstreams are one client connection's kept upstream connections, one
// transport per Postern connection and API key.
type upstreams struct {
	ctx        context.Context // the proxy server's, outlives the client connection
	mu         sync.Mutex
	transports map[transportKey]*transport
	closed     bool // the client connection closed or was taken over
}

// transportKey names the Postern connection and API key a transport's
// upstreams were opened for.
type transportKey struct{ conn, apiKey string }

// transport is one Postern connection's and key's upstreams, held with the
// key so that its revocation closes them.
type transport struct {
	*http.Transport
	release func()
}

type upstreamsKey struct{}

// forwarding is what an upstream dial needs of the request that asked for
// it.
type forwarding struct {
	conn store.Connection
	key  store.APIKey
	id   string
}

type forwardingKey struct{}

// ConnContext gives each client connection of the proxy listener its
// upstreams; set it as the proxy server's ConnContext, with ConnState.
func (p *Proxy) ConnContext(ctx context.Context, c net.Conn) context.Context {
	u := &upstreams{ctx: ctx}
	p.clients.Store(c, u)
	return context.WithValue(ctx, upstreamsKey{}, u)
}

// ConnState closes a client connection's upstreams when it closes or is
// taken over (a CONNECT, or a refusal written with its reason in the
// status line), and has the next request line of a keep-alive connection
// checked as the first one was (CheckLines).
func (p *Proxy) ConnState(c net.Conn, state http.ConnState) {
	if state == http.StateIdle {
		recheck(c)
		return
	}
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	if u, ok := p.clients.LoadAndDelete(c); ok {
		u.(*upstreams).close()
	}
}

// transport returns the transport for f, making one when needed, or nil
// once the client connection is gone.
func (u *upstreams) transport(p *Proxy, f forwarding) *http.Transport {
	k := transportKey{conn: f.conn.ID, apiKey: f.key.ID}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	if t, ok := u.transports[k]; ok {
		return t.Transport
	}
	if u.transports == nil || len(u.transports) >= maxTransportsPerClient {
		u.closeLocked()
		u.transports = map[transportKey]*transport{}
	}
	t := p.newTransport()
	held, release := p.auth.Hold(u.ctx, f.key)
	context.AfterFunc(held, t.CloseIdleConnections)
	u.transports[k] = &transport{Transport: t, release: release}
	return t
}

func (u *upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	u.closeLocked()
}

// closeLocked releases every transport's hold, which closes its idle
// upstreams; one in use closes when its request ends.
func (u *upstreams) closeLocked() {
	for _, t := range u.transports {
		t.release()
	}
	u.transports = nil
}

// newTransport returns a transport whose connections are streams to the
// agent of the request's connection.
func (p *Proxy) newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           p.dialUpstream,
		MaxIdleConns:          maxIdlePerTransport,
		MaxIdleConnsPerHost:   maxIdlePerTarget,
		IdleConnTimeout:       min(upstreamIdle, p.cfg.IdleTimeout),
		ResponseHeaderTimeout: p.cfg.IdleTimeout,
		// The client's own Accept-Encoding goes through untouched.
		DisableCompression: true,
	}
}

// dialUpstream opens a stream to the target through the agent of the
// connection the request names.
func (p *Proxy) dialUpstream(ctx context.Context, _, addr string) (net.Conn, error) {
	f, ok := ctx.Value(forwardingKey{}).(forwarding)
	if !ok {
		return nil, protocol.Errorf(protocol.InternalError, "forwarded request without its connection")
	}
	host, port, e := SplitTarget(addr)
	if e != nil {
		return nil, e
	}
	st, e := p.dial(ctx, f.conn, host, port, f.id)
	if e != nil {
		return nil, e
	}
	return st, nil
}

// roundTripper sends each request with the transport of its client
// connection, or a transport of its own when it has none.
type roundTripper struct{ p *Proxy }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	f, _ := req.Context().Value(forwardingKey{}).(forwarding)
	if u, ok := req.Context().Value(upstreamsKey{}).(*upstreams); ok {
		if t := u.transport(rt.p, f); t != nil {
			return t.RoundTrip(req)
		}
	}
	t := rt.p.newTransport()
	t.DisableKeepAlives = true
	defer t.CloseIdleConnections()
	return t.RoundTrip(req)
}

func (p *Proxy) reverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Header.Del("Proxy-Authorization")
			pr.Out.Header.Del("Proxy-Connection")
		},
		Transport:    roundTripper{p},
		ErrorHandler: forwardError,
	}
}

// forwardError answers a forwarded request that got no answer from the
// target: the agent's refusal, the key's end, or the upstream's failure.
func forwardError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		reply.Refuse(w, r, pe)
	case errors.Is(context.Cause(r.Context()), auth.ErrKeyEnded):
		reply.Refuse(w, r, protocol.Errorf(protocol.ProxyAuthRequired, "the API key was revoked or expired during the request"))
	default:
		reply.Refuse(w, r, protocol.Errorf(protocol.ConnectRefused, "forward request: %v", err))
	}
}

// forward carries a plain http:// proxy request through the tunnel.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, conn store.Connection, key store.APIKey) {
	ctx := context.WithValue(r.Context(), forwardingKey{}, forwarding{conn: conn, key: key, id: reply.RequestID(r)})
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}
