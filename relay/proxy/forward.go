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
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/store"
)

// Plain http:// requests are forwarded as a forward proxy does: the
// upstream connection (a stream to the agent, then to the target) is kept
// after the answer and used again by the next request of the same client
// connection for the same Postern connection and target, so a keep-alive
// client costs one stream and one target connection, not one per
// request. Every request is still authenticated and taken from the key's
// rate before it may use one; a revoked key or connection ends the stream
// in use, and an idle one is closed with the client connection, after
// upstreamIdle, or when the tunnel under it goes.
const (
	// upstreamIdle closes an upstream connection no request used for
	// this long.
	upstreamIdle = 90 * time.Second
	// maxIdlePerTarget bounds the idle upstreams of one client connection
	// to one target; an HTTP/1 client sends one request at a time on a
	// connection, so one is the usual number.
	maxIdlePerTarget = 2
	// maxConnectionsPerClient bounds how many Postern connections one
	// client connection keeps upstreams for.
	maxConnectionsPerClient = 8
)

// upstreams are one client connection's kept upstream connections, one
// transport per Postern connection.
type upstreams struct {
	mu         sync.Mutex
	transports map[string]*http.Transport
}

type upstreamsKey struct{}

// forwarding is what an upstream dial needs of the request that asked for
// it.
type forwarding struct {
	conn store.Connection
	id   string
}

type forwardingKey struct{}

// ConnContext gives each client connection of the proxy listener its
// upstreams; set it as the proxy server's ConnContext, with ConnState.
func (p *Proxy) ConnContext(ctx context.Context, c net.Conn) context.Context {
	u := &upstreams{}
	p.clients.Store(c, u)
	return context.WithValue(ctx, upstreamsKey{}, u)
}

// ConnState closes a client connection's upstreams when it closes or is
// taken over by a CONNECT.
func (p *Proxy) ConnState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	if u, ok := p.clients.LoadAndDelete(c); ok {
		u.(*upstreams).close()
	}
}

// transport returns the transport of connID, making one when needed.
func (u *upstreams) transport(connID string, newTransport func() *http.Transport) *http.Transport {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.transports[connID]; ok {
		return t
	}
	if u.transports == nil || len(u.transports) >= maxConnectionsPerClient {
		u.closeLocked()
		u.transports = map[string]*http.Transport{}
	}
	t := newTransport()
	u.transports[connID] = t
	return t
}

func (u *upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeLocked()
}

func (u *upstreams) closeLocked() {
	for _, t := range u.transports {
		t.CloseIdleConnections()
	}
	u.transports = nil
}

// newTransport returns a transport whose connections are streams to the
// agent of the request's connection.
func (p *Proxy) newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           p.dialUpstream,
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
		return u.transport(f.conn.ID, rt.p.newTransport).RoundTrip(req)
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
		Transport: roundTripper{p},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var pe *protocol.Error
			if errors.As(err, &pe) {
				reply.Refuse(w, r, pe)
				return
			}
			reply.Refuse(w, r, protocol.Errorf(protocol.ConnectRefused, "forward request: %v", err))
		},
	}
}

// forward carries a plain http:// proxy request through the tunnel.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, conn store.Connection) {
	ctx := context.WithValue(r.Context(), forwardingKey{}, forwarding{conn: conn, id: reply.RequestID(r)})
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}
