package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/cluster"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/internal/tick"
	"github.com/postern/postern/relay/proxy"
	"github.com/postern/postern/relay/ratelimit"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/webhook"
)

// Server is one relay node: the parts of the data plane and the admin side,
// wired together.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store store.Store

	broker  *broker.Broker
	router  *router.Router
	auth    *auth.Authenticator
	status  *status.Keeper
	events  *events.Bus
	api     *admin.API
	proxy   *proxy.Proxy
	metrics *metrics
	// handshakes paces tunnel handshakes (nil: unpaced).
	handshakes *ratelimit.Pacer
	// authSlots bounds tunnel requests checking their token at once.
	authSlots chan struct{}

	webhookClient *http.Client
	obs           observing
	// node is this node's part in a cluster; nil on a single node.
	node   *cluster.Node
	tokens tokenTimers
	// stopping is set from the start of a graceful stop: /readyz fails.
	stopping atomic.Bool
	// proxyAddr is the proxy listener's address, named to a client that
	// sends a proxy request to the API listener.
	proxyAddr atomic.Pointer[string]
	// background holds the status clock and webhook deliveries; ctx ends
	// them.
	background sync.WaitGroup
	ctx        context.Context
	cancel     context.CancelFunc
	closeOnce  sync.Once
}

// New returns a relay node for cfg. Call Close to end its sessions.
func New(cfg Config) (*Server, error) { return newServer(cfg, secret.Verify) }

// newServer is New with the secret comparison given, a seam for tests that
// count comparisons.
func newServer(cfg Config, verify auth.Verifier) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	s := &Server{cfg: cfg, log: log, store: cfg.Store, webhookClient: webhook.NewClient()}
	s.events = events.NewBus(events.RingSize, uint64(time.Now().UnixMicro()))
	s.metrics = newMetrics(cfg.Metrics)
	s.handshakes = ratelimit.NewPacer(cfg.TunnelHandshakesPerSecond, cfg.TunnelHandshakeBurst, MaxHandshakeWait)
	s.authSlots = make(chan struct{}, maxTunnelAuthsInFlight)
	var b *broker.Broker
	local := func(connID string) []status.View { return s.localViews(b, connID) }
	book, err := s.book(local)
	if err != nil {
		return nil, err
	}
	s.status = status.New(status.Config{
		NodeID: cfg.NodeID, HeartbeatInterval: cfg.HeartbeatInterval, AuthFailureWindow: cfg.AuthFailureWindow,
		Flap: s.flapPolicy(),
	}, cfg.Store, book, log)
	// Presence before status: status reads it. The token's check comes
	// last: it reads the store, and a tunnel's status is judged at once.
	observers := []broker.Observer{s.status, tokenWatch{s}}
	if s.node != nil {
		observers = []broker.Observer{s.node.Observer(), s.status, tokenWatch{s}}
	}
	bc := s.brokerConfig()
	if s.node != nil {
		bc.Nodes = s.node.LiveNodes
	}
	if b, err = broker.New(bc, log, observers...); err != nil {
		return nil, err
	}
	s.broker = b
	s.metrics.watch(b)
	s.router = router.New(b, s.status, nil)
	if s.node != nil {
		s.node.Bind(b, s.events, local)
		s.router = router.New(b, s.status, s.node.Remote())
		s.listenCluster()
	}
	if err := s.wire(verify); err != nil {
		b.Close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.startBackground()
	return s, nil
}

// localViews are the status views of a connection's live sessions here.
func (s *Server) localViews(b *broker.Broker, connID string) []status.View {
	sessions := b.Sessions(connID)
	out := make([]status.View, len(sessions))
	for i, sess := range sessions {
		out[i] = status.ViewOf(sess, s.cfg.NodeID)
	}
	return out
}

func (s *Server) brokerConfig() broker.Config {
	tc := tunnel.DefaultConfig()
	tc.AcceptBacklog = s.cfg.MaxStreamsPerTunnel
	tc.Logger = s.log
	return broker.Config{
		NodeID:                  s.cfg.NodeID,
		HeartbeatInterval:       s.cfg.HeartbeatInterval,
		HandshakeTimeout:        s.cfg.HandshakeTimeout,
		MaxStreamsPerTunnel:     s.cfg.MaxStreamsPerTunnel,
		MaxTunnelsPerConnection: s.cfg.MaxTunnelsPerConnection,
		Tunnel:                  tc,
	}
}

// wire builds the authenticator, the proxy and the API.
func (s *Server) wire(verify auth.Verifier) error {
	var err error
	s.auth, err = auth.New(s.store, auth.Config{
		FailuresPerSource:     s.cfg.AuthFailuresPerSource,
		FailuresPerCredential: s.cfg.AuthFailuresPerCredential,
		Window:                s.cfg.AuthLimitWindow,
		LookupsWhileLimited:   s.cfg.AuthLookupsWhileLimited,
		StoreEveryTime:        s.cfg.Cluster != nil,
	}, verify, s.status.TokenFailure, s.log)
	if err != nil {
		return err
	}
	s.proxy, err = proxy.New(proxy.Config{
		OpenTimeout: s.cfg.OpenTimeout, IdleTimeout: s.cfg.IdleTimeout, HeaderTimeout: s.cfg.HeaderTimeout,
		RatePerKey: s.cfg.ProxyRatePerKey, BurstPerKey: s.cfg.ProxyBurstPerKey,
	}, s.auth, s.router, s.metrics.carried, s.log)
	if err != nil {
		return err
	}
	s.api, err = admin.New(admin.Config{TokenOverlap: s.cfg.TokenOverlap, EventKeepAlive: s.cfg.EventKeepAlive}, admin.Parts{
		Store: s.store, Auth: s.auth, Router: s.router, Status: s.status, Bus: s.events, Log: s.log,
		Fanout: fanout{s}, Nodes: s.nodes, History: s.historyReader(),
		Diagnostics: diagnostics{s: s, started: time.Now()},
	})
	if err != nil {
		return err
	}
	return s.buildUI()
}

// startBackground starts the status clock, the writer of API keys' last
// use and, on a single node, one delivery per webhook (a cluster's node
// delivers from the shared store);
// they stop when s.ctx ends and Close waits for them.
func (s *Server) startBackground() {
	if s.node == nil {
		for _, cfg := range s.cfg.Webhooks {
			h := webhook.NewReceiver(cfg, s.webhookClient, s.log, s.cfg.Version)
			s.events.AddSink(h.Offer)
			s.background.Go(func() { h.Run(s.ctx) })
		}
	}
	s.background.Go(func() { s.status.Run(s.ctx) })
	s.background.Go(func() { s.auth.RecordUses(s.ctx) })
	s.startObserving()
}

// NodeID returns the node's id.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Handler serves the tunnel endpoint, the admin API and the health
// endpoints on one listener.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Refusals at the tunnel endpoint carry a request id like every other
	// error answer, so an operator can match an agent's log to the relay's.
	mux.Handle("GET "+protocol.TunnelPath, reply.WithRequestID(http.HandlerFunc(s.serveTunnel)))
	s.api.Route(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		reply.JSON(w, http.StatusOK, map[string]string{"status": "ok", "node_id": s.cfg.NodeID, "version": s.cfg.Version})
	})
	mux.Handle("GET /readyz", reply.WithRequestID(http.HandlerFunc(s.serveReady)))
	mux.Handle("GET /metrics", s.metrics.handler())
	s.routeObserving(mux)
	return s.metrics.countRefusals(s.notProxy(mux))
}

// notProxy answers a proxy request sent to the API listener — a CONNECT or
// an absolute-form URL, from a client given this address as its proxy —
// with where the proxy listener is, the reason in the status line.
func (s *Server) notProxy(next http.Handler) http.Handler {
	refuse := reply.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		where := "--proxy-listen"
		if a := s.proxyAddr.Load(); a != nil {
			where += " (" + *a + ")"
		}
		reply.Refuse(w, r, protocol.Errorf(protocol.InvalidRequest,
			"this is the API listener; the proxy (CONNECT host:port, http:// URLs) is on %s", where))
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect || r.URL.IsAbs() {
			refuse.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ProxyHandler serves the CONNECT proxy: `CONNECT host:port` (and plain
// http:// absolute-form requests) with Proxy-Authorization naming the
// connection and an API key.
func (s *Server) ProxyHandler() http.Handler {
	return s.metrics.countRefusals(reply.WithRequestID(s.proxy))
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.stopping.Load() {
		reply.Error(w, r, protocol.Errorf(protocol.RelayUnavailable, "node %s is stopping", s.cfg.NodeID))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		reply.Error(w, r, protocol.Errorf(protocol.RelayUnavailable, "store unreachable: %v", err))
		return
	}
	reply.JSON(w, http.StatusOK, map[string]string{"status": "ready", "node_id": s.cfg.NodeID})
}

// serveTunnel is the thin HTTP side of a tunnel: authenticate the agent
// token, upgrade, and hand the byte stream to the broker, which knows
// nothing of HTTP.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request) {
	if !s.admitHandshake(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandshakeTimeout)
	defer cancel()
	who, e := s.auth.Agent(r.WithContext(ctx))
	<-s.authSlots
	if e != nil {
		if e.Reason == protocol.AgentTokenInvalid || e.Reason == protocol.AgentTokenRevoked {
			s.log.Info("agent tunnel refused", "remote", r.RemoteAddr, "reason", e.Reason)
		}
		reply.Error(w, r, e)
		return
	}
	s.status.Watch(ctx, who.Connection) // the "from" of this tunnel's status events
	if !tunnel.OffersSubprotocol(r, protocol.Subprotocol) {
		reply.Error(w, r, protocol.Errorf(protocol.InvalidRequest, "WebSocket subprotocol %s required", protocol.Subprotocol))
		return
	}
	release, err := s.broker.Reserve(who.Connection.ID)
	if err != nil {
		s.log.Warn("agent tunnel refused: the connection holds as many tunnels as it may",
			"connection", who.Connection.ID, "remote", r.RemoteAddr, "max_tunnels_per_connection", s.cfg.MaxTunnelsPerConnection)
		e := protocol.Errorf(protocol.RateLimited, "%v; close some (lower tunnels in the agent config, or run fewer agent replicas) or raise max_tunnels_per_connection", err)
		e.RetryAfter = tunnelCapRetryAfter
		reply.Error(w, r, e)
		return
	}
	// The tunnel lives until the agent leaves or the node closes, not as
	// long as this request's context, and on the broker's goroutine.
	conn, err := tunnel.Upgrade(s.broker.Context(), w, r, protocol.Subprotocol)
	if err != nil {
		release()
		s.log.Info("agent tunnel upgrade", "remote", r.RemoteAddr, "err", err)
		return
	}
	s.broker.Serve(conn, broker.Identity{ConnectionID: who.Connection.ID, TokenID: who.TokenID, Remote: r.RemoteAddr}, release)
}

// MaxHandshakeWait is the furthest slot the handshake pacer hands out.
const MaxHandshakeWait = 2 * time.Minute

// maxTunnelAuthsInFlight bounds tunnel requests checking their token at
// once: when the store answers slower than the pace admits (a busy disk),
// the excess is handed a later slot rather than queued until the
// handshake timeout.
const maxTunnelAuthsInFlight = 64

// admitHandshake paces tunnel handshakes before any store lookup: over the
// node's rate, or with maxTunnelAuthsInFlight token checks under way, it
// answers 503 RELAY_UNAVAILABLE with the Retry-After of the agent's own
// slot, and reports false. Admitted, the caller holds an auth slot.
func (s *Server) admitHandshake(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := s.handshakes.Admit(time.Now())
	busy := ""
	if ok {
		select {
		case s.authSlots <- struct{}{}:
			s.metrics.handshakes.WithLabelValues("admitted").Inc()
			return true
		default:
			wait, busy = s.handshakes.Defer(time.Now()), ", and has as many token checks under way as it takes"
		}
	}
	s.metrics.handshakes.WithLabelValues("paced").Inc()
	// The agent comes back on a new connection at its slot; an idle one
	// kept meanwhile would cost the node a socket per waiting agent.
	w.Header().Set("Connection", "close")
	e := protocol.Errorf(protocol.RelayUnavailable,
		"node %s is taking tunnel handshakes at %g a second%s; come back in %s", s.cfg.NodeID, s.cfg.TunnelHandshakesPerSecond, busy, wait.Round(time.Millisecond))
	e.RetryAfter = int((wait + time.Second - 1) / time.Second)
	reply.Error(w, r, e)
	return false
}

// tunnelCapRetryAfter is the pause asked of an agent refused for the
// tunnel cap: long enough for tunnels it gave up on to be noticed dead
// (yamux keepalive, 15 s), short enough to fill a freed place soon.
const tunnelCapRetryAfter = 30

// Listeners are where a node serves: the API listener (agent tunnels,
// the API, health and metrics), the product's proxy, and in a cluster the
// peer listener other nodes forward to.
type Listeners struct {
	API, Proxy, Peer net.Listener
}

// Serve runs the API/tunnel server on apiLn and the CONNECT proxy on
// proxyLn until ctx ends, then shuts both down and closes every tunnel.
func (s *Server) Serve(ctx context.Context, apiLn, proxyLn net.Listener) error {
	return s.ServeListeners(ctx, Listeners{API: apiLn, Proxy: proxyLn})
}

// ServeListeners is Serve with the peer listener of a cluster node: the
// node joins the cluster first, and leaves it on the way out.
func (s *Server) ServeListeners(ctx context.Context, ls Listeners) error {
	if (s.node == nil) != (ls.Peer == nil) {
		return errors.New("relay: a peer listener goes with a cluster configuration, and only with one")
	}
	servers := []*http.Server{s.httpServer(s.Handler()), s.proxyServer()}
	listeners := []net.Listener{ls.API, s.proxyListener(ls.Proxy)}
	s.proxy.SetAPIAddr(ls.API.Addr().String())
	proxyAddr := ls.Proxy.Addr().String()
	s.proxyAddr.Store(&proxyAddr)
	var peer *http.Server
	if s.node != nil {
		if err := s.node.Start(ctx); err != nil {
			return err
		}
		s.background.Go(func() { s.node.Run(s.ctx) })
		peer = s.httpServer(s.node.PeerHandler())
		go func() { _ = peer.Serve(ls.Peer) }()
	}
	// Event streams never go idle; end them so Shutdown need not wait.
	servers[0].RegisterOnShutdown(s.events.Shutdown)
	errc := make(chan error, len(servers))
	for i, ln := range listeners {
		go func() { errc <- servers[i].Serve(ln) }()
	}
	var errs []error
	select {
	case <-ctx.Done():
	case err := <-errc:
		errs = append(errs, err)
	}
	s.stop(servers, peer)
	for len(errs) < len(servers) { // collect every Serve goroutine
		errs = append(errs, <-errc)
	}
	for _, err := range errs {
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// proxyServer is the proxy listener's HTTP server: the proxy handler, with
// each client connection's kept http:// upstreams tied to it.
func (s *Server) proxyServer() *http.Server {
	srv := s.httpServer(s.ProxyHandler())
	srv.ConnContext, srv.ConnState = s.proxy.ConnContext, s.proxy.ConnState
	return srv
}

// proxyListener wraps the proxy listener: the proxy serves a connection's
// first CONNECT itself (proxy.Front), and a malformed CONNECT line that
// reaches net/http is answered BAD_TARGET (and counted) before net/http
// refuses it bare.
func (s *Server) proxyListener(ln net.Listener) net.Listener {
	return proxy.CheckLines(s.proxy.Front(ln, s.metrics.answered), s.metrics.refused)
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		IdleTimeout:       90 * time.Second, // an idle keep-alive connection is closed
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// stop is the graceful stop. /readyz fails at once, and the listeners
// close before any GoAway goes out, so an agent told to move never finds
// this node still accepting: a Shutdown with a done context closes them
// synchronously and returns at once. Then GoAway, open streams finish up to
// DrainTimeout, and what is left is closed. Close (a second signal) cuts
// the drain short.
func (s *Server) stop(servers []*http.Server, peer *http.Server) {
	s.stopping.Store(true)
	if s.cfg.ShutdownDelay > 0 {
		s.log.Info("stopping: unready, still serving until load balancers notice", "shutdown_delay", s.cfg.ShutdownDelay)
		tick.Sleep(s.ctx, s.cfg.ShutdownDelay)
	}
	now, stopNow := context.WithCancel(context.Background())
	stopNow()
	for _, srv := range servers {
		_ = srv.Shutdown(now)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+5*time.Second)
	defer cancel()
	var shut sync.WaitGroup
	for _, srv := range servers {
		shut.Go(func() { _ = srv.Shutdown(shutCtx) })
	}
	told := s.broker.GoAway()
	if told > 0 {
		s.metrics.goaways.Add(float64(told))
		s.log.Info("draining: sent goaway to agents", "tunnels", told, "timeout", s.cfg.DrainTimeout)
	}
	if s.node != nil {
		s.leaveCluster(shutCtx, told)
		_ = peer.Shutdown(now)
	} else if told > 0 {
		s.broker.WaitStreams(s.cfg.DrainTimeout)
	}
	s.Close()
	shut.Wait()
}

// leaveCluster drains a cluster node: the cluster hears it is leaving,
// its tunnels serve (forwarded requests too) until their agents have
// replacements on other nodes, in-flight streams finish, and only then
// does its presence go. All of it within DrainTimeout.
func (s *Server) leaveCluster(ctx context.Context, told int) {
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	s.node.BeginDrain(ctx)
	for told > 0 && time.Now().Before(deadline) && !s.node.Moved(ctx) {
		if !tick.Sleep(s.ctx, 100*time.Millisecond) {
			break
		}
	}
	s.node.StopForwarded()
	if told > 0 {
		s.broker.WaitStreams(time.Until(deadline))
	}
	s.node.Leave(context.WithoutCancel(ctx))
}

// Close ends every tunnel and event stream and waits for their handlers,
// the CONNECT data phases, the status clock and webhook deliveries. It is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.stopping.Store(true)
		s.broker.Close()
		if s.node != nil {
			s.node.Close()
		}
		s.tokens.stop()
		s.cancel()
		s.events.Shutdown()
	})
	s.background.Wait()
	if s.proxy != nil {
		s.proxy.Close()
	}
	s.webhookClient.CloseIdleConnections()
}
