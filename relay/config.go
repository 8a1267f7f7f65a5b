package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/webhook"
)

// Webhook is a receiver of status events (see package webhook).
type Webhook = webhook.Config

// Config configures a relay node. Every field is used as given: start from
// DefaultConfig, whose values are the documented defaults, and set what
// differs; New refuses a Config that does not Validate.
type Config struct {
	// NodeID names this node in Welcome and in status. DefaultConfig
	// gives a random one.
	NodeID string
	// Store persists connections, tokens and API keys. Required.
	Store store.Store
	// Logger receives operational logs; secrets are never logged.
	Logger *slog.Logger
	// HeartbeatInterval is the Health period agents are asked for.
	HeartbeatInterval time.Duration
	// HandshakeTimeout bounds the tunnel request from its headers through
	// Welcome.
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
	// ShutdownDelay is how long a stopping relay keeps serving after
	// /readyz turned unready, before it closes its listeners, so that a
	// load balancer's health check takes it out of rotation first and no
	// new connection meets a closed listener. Zero closes them at once.
	ShutdownDelay time.Duration
	// MaxStreamsPerTunnel caps concurrent streams on one tunnel.
	MaxStreamsPerTunnel int
	// MaxTunnelsPerConnection caps the tunnels one connection may hold on
	// this node, handshakes included; a tunnel over it is refused before
	// the upgrade with 429 RATE_LIMITED. In a cluster each node counts its
	// own. Zero turns the cap off.
	MaxTunnelsPerConnection int
	// TunnelHandshakesPerSecond paces tunnel handshakes for the whole
	// node, so a fleet coming back after a restart does not arrive at
	// once: over it, a tunnel request is answered, before any store
	// lookup, 503 RELAY_UNAVAILABLE with a Retry-After that hands each
	// refused agent a slot of its own (see ratelimit.Pacer). Zero turns
	// pacing off.
	TunnelHandshakesPerSecond float64
	// TunnelHandshakeBurst is how many handshakes may start at once
	// within TunnelHandshakesPerSecond; at least 1.
	TunnelHandshakeBurst int
	// Metrics receives the node's Prometheus series, served at /metrics;
	// nil gives the node a registry of its own.
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
	// RATE_LIMITED with Retry-After, before any store lookup. IPv6
	// sources count per /64. Zero turns the limit off. See relay/auth.
	AuthFailuresPerSource int
	// AuthFailuresPerCredential is the same limit per credential id. It
	// holds back only sources that were refused themselves, so knowing an
	// id is not enough to lock its legitimate holder out. Zero turns the
	// limit off.
	AuthFailuresPerCredential int
	// AuthLimitWindow is the period of both auth failure limits.
	AuthLimitWindow time.Duration
	// AuthLookupsWhileLimited is how many store lookups per second, for
	// the whole node, may check a credential from a source an auth
	// failure limit holds back, when this node has not seen that
	// credential's id recently: so a correct credential still passes
	// while its address is limited, and a flood of wrong ones costs at
	// most this many reads. Zero gives limited sources no lookups (only
	// credentials this node has seen pass). See relay/auth.
	AuthLookupsWhileLimited float64
	// ProxyRatePerKey caps proxy requests (CONNECT and forwarded http://)
	// per API key, in requests per second; zero means no cap. Excess
	// requests are answered 429 RATE_LIMITED with Retry-After.
	ProxyRatePerKey float64
	// ProxyBurstPerKey is how many requests a key may make at once within
	// ProxyRatePerKey; at least 1 when a rate is set.
	ProxyBurstPerKey int
	// HeaderTimeout bounds reading a request's line and headers on both
	// listeners; a client that sends them slower is cut off.
	HeaderTimeout time.Duration

	// HistoryRetention is how long connections' transitions are kept
	// (each existing connection's newest of each kind stays regardless).
	HistoryRetention time.Duration
	// FlapThreshold and FlapWindow tell a flapping tunnel: more than
	// FlapThreshold moves within FlapWindow (see status.FlapPolicy).
	// A zero FlapThreshold turns flapping off.
	FlapThreshold int
	FlapWindow    time.Duration
	// RecentLogs and RecentAudit, when set, return the node's newest log
	// lines, and of them those of admins' actions, for support bundles
	// (GET /v1/diag/logs and /audit); the serve command keeps them.
	RecentLogs, RecentAudit func() []string
	// SecureCookies marks the status page's cookies Secure even on a
	// plain listener, for a relay behind a proxy that ends TLS; a TLS
	// listener always does.
	SecureCookies bool

	// Cluster, when not nil, makes this node one of a cluster whose nodes
	// share Store, which must then be one several processes can share
	// (PostgreSQL). See package cluster.
	Cluster *ClusterConfig
}

// ClusterConfig is a node's part in a cluster.
type ClusterConfig struct {
	// PeerAdvertise is where the other nodes reach this node's peer
	// listener: ws://host:port, or wss:// when the node serves TLS.
	PeerAdvertise string
	// Key is the secret every node of the cluster shares; peer links
	// present it. At least cluster.MinKeyLen bytes.
	Key []byte
	// Lease is how long the node's and its sessions' presence lives
	// without a renewal (every heartbeat); longer than the heartbeat.
	Lease time.Duration
	// PeerTLS verifies the other nodes' certificates on wss:// links.
	PeerTLS *tls.Config
}

// Defaults of DefaultConfig.
const (
	DefaultHeartbeatInterval       = 15 * time.Second
	DefaultHandshakeTimeout        = 10 * time.Second
	DefaultOpenTimeout             = 15 * time.Second
	DefaultIdleTimeout             = 15 * time.Minute
	DefaultTokenOverlap            = 24 * time.Hour
	DefaultAuthFailureWindow       = 5 * time.Minute
	DefaultDrainTimeout            = 30 * time.Second
	DefaultMaxStreamsPerTunnel     = 512
	DefaultMaxTunnelsPerConnection = 16
	// DefaultTunnelHandshakesPerSecond and DefaultTunnelHandshakeBurst
	// keep a node under 500 handshakes in any second: 10,000 agents of
	// two tunnels each are all back some 45 s after a restart.
	DefaultTunnelHandshakesPerSecond = 450
	DefaultTunnelHandshakeBurst      = 45
	DefaultEventKeepAlive            = 15 * time.Second
	DefaultAuthFailuresPerSource     = 10
	DefaultAuthFailuresPerCredential = 20
	DefaultAuthLimitWindow           = time.Minute
	DefaultAuthLookupsWhileLimited   = 20
	DefaultHeaderTimeout             = 10 * time.Second
	DefaultHistoryRetention          = history.DefaultRetention
	DefaultFlapThreshold             = 5
	DefaultFlapWindow                = 10 * time.Minute
)

// maxHeaderBytes caps a request's line plus headers on both listeners;
// larger requests are answered 431.
const maxHeaderBytes = 64 << 10

// DefaultConfig returns the production defaults, a random node id and a
// logger that discards. Store must still be set.
func DefaultConfig() Config {
	return Config{
		NodeID:                    "relay-" + reply.NewID(4),
		Logger:                    slog.New(slog.DiscardHandler),
		HeartbeatInterval:         DefaultHeartbeatInterval,
		HandshakeTimeout:          DefaultHandshakeTimeout,
		OpenTimeout:               DefaultOpenTimeout,
		IdleTimeout:               DefaultIdleTimeout,
		TokenOverlap:              DefaultTokenOverlap,
		AuthFailureWindow:         DefaultAuthFailureWindow,
		EventKeepAlive:            DefaultEventKeepAlive,
		MaxStreamsPerTunnel:       DefaultMaxStreamsPerTunnel,
		MaxTunnelsPerConnection:   DefaultMaxTunnelsPerConnection,
		TunnelHandshakesPerSecond: DefaultTunnelHandshakesPerSecond,
		TunnelHandshakeBurst:      DefaultTunnelHandshakeBurst,
		DrainTimeout:              DefaultDrainTimeout,
		AuthFailuresPerSource:     DefaultAuthFailuresPerSource,
		AuthFailuresPerCredential: DefaultAuthFailuresPerCredential,
		AuthLimitWindow:           DefaultAuthLimitWindow,
		AuthLookupsWhileLimited:   DefaultAuthLookupsWhileLimited,
		HeaderTimeout:             DefaultHeaderTimeout,
		HistoryRetention:          DefaultHistoryRetention,
		FlapThreshold:             DefaultFlapThreshold,
		FlapWindow:                DefaultFlapWindow,
	}
}

// Validate reports every setting that is missing or out of range, with its
// name, rather than patching it.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"heartbeat interval", c.HeartbeatInterval}, {"handshake timeout", c.HandshakeTimeout},
		{"open timeout", c.OpenTimeout}, {"idle timeout", c.IdleTimeout}, {"token overlap", c.TokenOverlap},
		{"auth failure window", c.AuthFailureWindow}, {"drain timeout", c.DrainTimeout},
		{"event keepalive", c.EventKeepAlive}, {"auth limit window", c.AuthLimitWindow}, {"header timeout", c.HeaderTimeout},
		{"history retention", c.HistoryRetention},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.d))
		}
	}
	errs = append(errs, c.validateFlap()...)
	if c.MaxStreamsPerTunnel < 1 {
		errs = append(errs, fmt.Errorf("max streams per tunnel %d: must be at least 1", c.MaxStreamsPerTunnel))
	}
	if c.TunnelHandshakesPerSecond < 0 || c.TunnelHandshakesPerSecond > 0 && c.TunnelHandshakeBurst < 1 {
		errs = append(errs, fmt.Errorf("tunnel handshakes per second %g with burst %d: the rate must not be negative (0 turns pacing off) and a rate needs a burst of at least 1", c.TunnelHandshakesPerSecond, c.TunnelHandshakeBurst))
	}
	if c.MaxTunnelsPerConnection < 0 {
		errs = append(errs, fmt.Errorf("max tunnels per connection %d: must not be negative (0 turns the cap off)", c.MaxTunnelsPerConnection))
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("shutdown delay %s: must not be negative", c.ShutdownDelay))
	}
	if c.Cluster != nil {
		if _, ok := c.Store.(store.Cluster); !ok && c.Store != nil {
			errs = append(errs, errors.New("a cluster needs a store its nodes share: use a postgres:// database"))
		}
	}
	for _, w := range c.Webhooks {
		if err := w.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay config: %w", err)
	}
	return nil
}

func (c Config) validateFlap() []error {
	var errs []error
	if c.FlapThreshold < 0 || c.FlapThreshold > status.MaxFlapThreshold {
		errs = append(errs, fmt.Errorf("flap threshold %d: must be 0 (off) to %d", c.FlapThreshold, status.MaxFlapThreshold))
	}
	if c.FlapThreshold > 0 && c.FlapWindow < status.MinFlapWindow {
		errs = append(errs, fmt.Errorf("flap window %s: must be at least %s", c.FlapWindow, status.MinFlapWindow))
	}
	return errs
}
