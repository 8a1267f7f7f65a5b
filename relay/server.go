package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

// Config configures a relay node. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// NodeID names this node in Welcome and in status; random if empty.
	NodeID string
	// Store persists connections, tokens and API keys. Required.
	Store store.Store
	// Logger receives operational logs; secrets are never logged.
	Logger *slog.Logger
	// HeartbeatInterval is the Health period agents are asked for.
	HeartbeatInterval time.Duration
	// HandshakeTimeout bounds the WebSocket upgrade plus Hello/Welcome.
	HandshakeTimeout time.Duration
	// OpenTimeout bounds opening a stream and reading the agent's result
	// (resolve and connect happen inside it).
	OpenTimeout time.Duration
	// IdleTimeout ends a proxied stream with no traffic either way.
	IdleTimeout time.Duration
	// TokenOverlap is how long the previous agent tokens stay valid after
	// a rotation.
	TokenOverlap time.Duration
	// AuthFailureWindow is how long a refused agent token keeps a
	// connection's auth_status at failing.
	AuthFailureWindow time.Duration
	// DrainTimeout is how long a stopping relay lets open streams finish
	// after telling agents to move (GoAway).
	DrainTimeout time.Duration
	// MaxStreamsPerTunnel caps concurrent streams on one tunnel.
	MaxStreamsPerTunnel int
	// Metrics receives the node's Prometheus series, served at /metrics;
	// a fresh registry when nil.
	Metrics *prometheus.Registry
	// Version is reported by /healthz.
	Version string
	// Webhooks receive every status event of their scope.
	Webhooks []Webhook
	// EventKeepAlive is the comment period on idle GET /v1/events streams.
	EventKeepAlive time.Duration

	// AuthFailuresPerSource is how many refused credentials (agent tokens
	// and API keys alike) one source address may present per
	// AuthLimitWindow; after that every attempt from it is answered 429
	// RATE_LIMITED with Retry-After, before any store lookup. IPv6 sources
	// count per /64. Negative turns the limit off. See ratelimit.go.
	AuthFailuresPerSource int
	// AuthFailuresPerCredential is the same limit per credential id (agent
	// token id or API key id). It holds back only sources that were
	// refused themselves, so knowing an id is not enough to lock its
	// legitimate holder out. Negative turns the limit off.
	AuthFailuresPerCredential int
	// AuthLimitWindow is the period of both auth failure limits.
	AuthLimitWindow time.Duration
	// ProxyRatePerKey caps proxy requests (CONNECT and forwarded http://)
	// per API key, in requests per second; 0 means no cap. Excess requests
	// are answered 429 RATE_LIMITED with Retry-After.
	ProxyRatePerKey float64
	// ProxyBurstPerKey is how many requests a key may make at once within
	// ProxyRatePerKey; it defaults to the rate rounded up, at least 1.
	ProxyBurstPerKey int
	// HeaderTimeout bounds reading a request's line and headers on both
	// listeners; a client that sends them slower is cut off.
	HeaderTimeout time.Duration

	// verifySecret compares a presented secret with a stored hash; a seam
	// for tests that count comparisons. Defaults to secret.Verify.
	verifySecret func(hash, sec []byte) bool
}

// maxHeaderBytes caps a request's line plus headers on both listeners;
// larger requests are answered 431.
const maxHeaderBytes = 64 << 10

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval:   15 * time.Second,
		HandshakeTimeout:    10 * time.Second,
		OpenTimeout:         15 * time.Second,
		IdleTimeout:         15 * time.Minute,
		TokenOverlap:        24 * time.Hour,
		AuthFailureWindow:   5 * time.Minute,
		EventKeepAlive:      15 * time.Second,
		MaxStreamsPerTunnel: 512,
		DrainTimeout:        30 * time.Second,

		AuthFailuresPerSource:     10,
		AuthFailuresPerCredential: 20,
		AuthLimitWindow:           time.Minute,
		HeaderTimeout:             10 * time.Second,
	}
}

func (c *Config) fill() error {
	if c.Store == nil {
		return errors.New("relay config: store is required")
	}
	d := DefaultConfig()
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = d.OpenTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.TokenOverlap <= 0 {
		c.TokenOverlap = d.TokenOverlap
	}
	if c.AuthFailureWindow <= 0 {
		c.AuthFailureWindow = d.AuthFailureWindow
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.MaxStreamsPerTunnel <= 0 {
		c.MaxStreamsPerTunnel = d.MaxStreamsPerTunnel
	}
	if c.EventKeepAlive <= 0 {
		c.EventKeepAlive = d.EventKeepAlive
	}
	if c.AuthFailuresPerSource == 0 {
		c.AuthFailuresPerSource = d.AuthFailuresPerSource
	}
	if c.AuthFailuresPerCredential == 0 {
		c.AuthFailuresPerCredential = d.AuthFailuresPerCredential
	}
	if c.AuthLimitWindow <= 0 {
		c.AuthLimitWindow = d.AuthLimitWindow
	}
	if c.ProxyRatePerKey < 0 || math.IsNaN(c.ProxyRatePerKey) || math.IsInf(c.ProxyRatePerKey, 0) {
		return fmt.Errorf("relay config: proxy rate per key must be a finite number >= 0, not %v", c.ProxyRatePerKey)
	}
	if c.ProxyBurstPerKey <= 0 {
		c.ProxyBurstPerKey = max(1, int(math.Ceil(c.ProxyRatePerKey)))
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = d.HeaderTimeout
	}
	if c.verifySecret == nil {
		c.verifySecret = secret.Verify
	}
	for _, w := range c.Webhooks {
		if err := w.validate(); err != nil {
			return fmt.Errorf("relay config: %w", err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NodeID == "" {
		c.NodeID = "relay-" + randomHex(4)
	}
	return nil
}

// Server is one relay node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store store.Store
	reg   *Registry

	verdicts verdictCache
	metrics  *metrics

	// auth counts refused credentials (ratelimit.go); proxyRate caps
	// proxy requests per API key, nil when off.
	auth      *authGuard
	proxyRate *limiter

	// tunnels tracks the handler goroutines that own live sessions, so
	// Close can wait for them (hijacked connections are invisible to
	// http.Server.Shutdown).
	tunnels sync.WaitGroup
	// ctx ends every session when the server closes.
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once

	// Status events (events.go, webhook.go).
	events        *eventBus
	watch         statusWatch
	webhooks      []*webhook
	webhookClient *http.Client
	// background holds the status clock and webhook deliveries.
	background sync.WaitGroup
}

// New returns a relay node. Call Close to end its sessions.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:           cfg,
		log:           cfg.Logger.With("node", cfg.NodeID),
		store:         cfg.Store,
		reg:           newRegistry(),
		ctx:           ctx,
		cancel:        cancel,
		webhookClient: newWebhookClient(),
		proxyRate:     newProxyRate(cfg),
	}
	s.auth = newAuthGuard(cfg, s.log, time.Now)
	s.metrics = newMetrics(cfg.Metrics, s)
	s.startEvents()
	return s, nil
}

// NodeID returns the node's id.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Handler serves the tunnel endpoint, the admin API and the health
// endpoints on one listener.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Refusals at the tunnel endpoint carry a request id like every other
	// error answer, so an operator can match an agent's log to the relay's.
	mux.Handle("GET /v1/tunnel", withRequestID(http.HandlerFunc(s.handleTunnel)))
	s.routeAPI(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node_id": s.cfg.NodeID, "version": s.cfg.Version})
	})
	mux.Handle("GET /readyz", withRequestID(http.HandlerFunc(s.handleReady)))
	mux.Handle("GET /metrics", s.metrics.handler())
	return s.metrics.countRefusals(mux)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, r, apiError{reason: "RELAY_UNAVAILABLE", msg: "store unreachable: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "node_id": s.cfg.NodeID})
}

// Serve runs the API/tunnel server on apiLn and the CONNECT proxy on
// proxyLn until ctx ends, then shuts both down and closes every tunnel.
func (s *Server) Serve(ctx context.Context, apiLn, proxyLn net.Listener) error {
	api := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		IdleTimeout:       90 * time.Second, // an idle keep-alive connection is closed
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	proxy := &http.Server{
		Handler:           s.ProxyHandler(),
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		IdleTimeout:       90 * time.Second, // an idle keep-alive connection is closed
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	// Event streams never go idle; end them so Shutdown need not wait.
	api.RegisterOnShutdown(s.events.shutdown)
	errc := make(chan error, 2)
	go func() { errc <- api.Serve(apiLn) }()
	go func() { errc <- proxy.Serve(proxyLn) }()

	var errs []error
	select {
	case <-ctx.Done():
	case err := <-errc:
		errs = append(errs, err)
	}
	// Graceful stop. The listeners close before any GoAway goes out, so an
	// agent told to move never finds this node still accepting: a Shutdown
	// with a done context closes them synchronously and returns at once.
	// Then GoAway, open streams finish up to DrainTimeout, and what is
	// left is closed. Close (a second signal) cuts the drain short.
	now, stopNow := context.WithCancel(context.Background())
	stopNow()
	_ = api.Shutdown(now)
	_ = proxy.Shutdown(now)
	shutCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+5*time.Second)
	defer cancel()
	var shut sync.WaitGroup
	for _, srv := range []*http.Server{api, proxy} {
		shut.Add(1)
		go func() {
			defer shut.Done()
			_ = srv.Shutdown(shutCtx)
		}()
	}
	s.drain(s.cfg.DrainTimeout)
	s.Close()
	shut.Wait()
	for len(errs) < 2 { // collect both Serve goroutines
		errs = append(errs, <-errc)
	}
	for _, err := range errs {
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// Close ends every tunnel and event stream and waits for their handlers,
// the status clock and webhook deliveries. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.reg.closeAll()
	})
	s.tunnels.Wait()
	s.stopEvents()
}

// tunnelConfig is the transport's default with the backlog the stream cap
// needs.
func (s *Server) tunnelConfig() tunnel.Config {
	c := tunnel.DefaultConfig()
	c.AcceptBacklog = s.cfg.MaxStreamsPerTunnel
	c.Logger = s.log
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}
