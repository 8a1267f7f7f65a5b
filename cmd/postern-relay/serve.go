package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/cmd/internal/debugserve"
	"github.com/postern/postern/cmd/internal/stopsignal"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/proxyproto"
	"github.com/postern/postern/relay/store"
	"github.com/postern/postern/relay/store/postgres"
	"github.com/postern/postern/relay/store/sqlite"
)

// serveConfig is the relay's config file; flags override it.
type serveConfig struct {
	Listen            string          `yaml:"listen"`
	ProxyListen       string          `yaml:"proxy_listen"`
	Data              string          `yaml:"data"`
	Database          string          `yaml:"database"`
	TLSCert           string          `yaml:"tls_cert"`
	TLSKey            string          `yaml:"tls_key"`
	NodeID            string          `yaml:"node_id"`
	LogLevel          string          `yaml:"log_level"`
	HeartbeatInterval time.Duration   `yaml:"heartbeat_interval"`
	Webhooks          []webhookConfig `yaml:"webhooks"`

	// Limits; zero keeps the relay's default.
	DrainTimeout              time.Duration `yaml:"drain_timeout"`
	ShutdownDelay             time.Duration `yaml:"shutdown_delay"`
	IdleTimeout               time.Duration `yaml:"idle_timeout"`
	MaxStreamsPerTunnel       int           `yaml:"max_streams_per_tunnel"`
	MaxTunnelsPerConnection   int           `yaml:"max_tunnels_per_connection"`
	TunnelHandshakesPerSecond float64       `yaml:"tunnel_handshakes_per_second"`
	TunnelHandshakeBurst      int           `yaml:"tunnel_handshake_burst"`
	AuthFailuresPerSource     int           `yaml:"auth_failures_per_source"`
	AuthFailuresPerCredential int           `yaml:"auth_failures_per_credential"`
	ProxyRatePerKey           float64       `yaml:"proxy_rate_per_key"`
	ProxyBurstPerKey          int           `yaml:"proxy_burst_per_key"`
	AuthLookupsWhileLimited   float64       `yaml:"auth_lookups_while_limited"`
	TokenOverlap              time.Duration `yaml:"token_overlap"`

	// Load balancers whose PROXY protocol headers name the client
	// (edge.go).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// databaseInArgv is set when --database was given (edge.go).
	databaseInArgv bool

	// Connection history and the status page (observe.go).
	HistoryRetention time.Duration `yaml:"history_retention"`
	FlapThreshold    int           `yaml:"flap_threshold"`
	FlapWindow       time.Duration `yaml:"flap_window"`
	SecureCookies    bool          `yaml:"secure_cookies"`

	// Cluster of nodes sharing a PostgreSQL database (cluster.go).
	PeerListen     string        `yaml:"peer_listen"`
	PeerAdvertise  string        `yaml:"peer_advertise"`
	ClusterKeyFile string        `yaml:"cluster_key_file"`
	ClusterLease   time.Duration `yaml:"cluster_lease"`
}

// webhookConfig is one webhooks entry. The signing secret is read from a
// file, never from the config or a flag, so it stays out of shell
// history, process listings and config repositories.
type webhookConfig struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secret_file"`
	Workspace  string `yaml:"workspace"`
}

// maxSecretFileSize bounds a webhook secret file.
const maxSecretFileSize = 4096

// loadWebhooks reads every webhook's secret file and reports every bad
// entry at once; the relay validates URL, secret length and workspace.
func loadWebhooks(cfgs []webhookConfig) ([]relay.Webhook, error) {
	var (
		out  []relay.Webhook
		errs []error
	)
	for i, c := range cfgs {
		if c.SecretFile == "" {
			errs = append(errs, fmt.Errorf("webhooks[%d]: secret_file is required", i))
			continue
		}
		secret, err := readSecretFile(c.SecretFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhooks[%d]: %w", i, err))
			continue
		}
		out = append(out, relay.Webhook{URL: c.URL, Secret: secret, Workspace: c.Workspace})
	}
	return out, errors.Join(errs...)
}

func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret_file: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("secret_file %s: readable by every user (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("secret_file %s: %w", path, err)
	}
	if len(data) > maxSecretFileSize {
		return nil, fmt.Errorf("secret_file %s: larger than %d bytes", path, maxSecretFileSize)
	}
	return bytes.TrimSpace(data), nil
}

func newServeCmd() *cobra.Command {
	var cfgFile string
	flags := serveConfig{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a relay node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := serveConfig{Listen: ":8080", ProxyListen: ":8081", Data: "postern-data", LogLevel: "info"}
			if cfgFile != "" {
				if err := loadServeConfig(cfgFile, &cfg); err != nil {
					return err
				}
			}
			overrideSet(cmd, &cfg, flags)
			return serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML config file (keys: listen, proxy_listen, data, database, tls_cert, tls_key, node_id, log_level, heartbeat_interval, webhooks, drain_timeout, shutdown_delay, idle_timeout, max_streams_per_tunnel, max_tunnels_per_connection, tunnel_handshakes_per_second, tunnel_handshake_burst, auth_failures_per_source, auth_failures_per_credential, auth_lookups_while_limited, trusted_proxies, proxy_rate_per_key, proxy_burst_per_key, peer_listen, peer_advertise, cluster_key_file, cluster_lease, history_retention, flap_threshold, flap_window, secure_cookies; see docs/operations.md)")
	f.StringVar(&flags.Data, "data", "", "data directory: SQLite store and admin.key (default ./postern-data)")
	f.StringVar(&flags.Database, "database", "", "store URL: sqlite:PATH or postgres://URL (default: $POSTERN_DATABASE_URL, else SQLite in --data); a password belongs in the config file or POSTERN_DATABASE_URL, not here")
	f.StringVar(&flags.Listen, "listen", "", "API and tunnel listen address (default :8080)")
	f.StringVar(&flags.ProxyListen, "proxy-listen", "", "CONNECT proxy listen address (default :8081)")
	f.StringVar(&flags.TLSCert, "tls-cert", "", "TLS certificate file for both listeners")
	f.StringVar(&flags.TLSKey, "tls-key", "", "TLS key file for both listeners")
	f.StringVar(&flags.NodeID, "node-id", "", "node id shown to agents and in status (default: random)")
	f.StringVar(&flags.LogLevel, "log-level", "", "debug, info, warn or error")
	f.StringVar(&flags.PeerListen, "peer-listen", "", "cluster: listen address for the other nodes' peer links (needs a postgres:// database)")
	f.StringVar(&flags.PeerAdvertise, "peer-advertise", "", "cluster: URL the other nodes reach --peer-listen at (ws://host:port, wss:// with --tls-cert)")
	f.StringVar(&flags.ClusterKeyFile, "cluster-key-file", "", "cluster: file holding the secret every node shares (mode 0600, at least 32 bytes)")
	f.IntVar(&flags.MaxTunnelsPerConnection, "max-tunnels-per-connection", 0, "most tunnels one connection may hold on this node, handshakes included; more are refused with 429 RATE_LIMITED (default 16; negative turns the cap off)")
	f.StringSliceVar(&flags.TrustedProxies, "trusted-proxies", nil, "load balancers (CIDR or address, comma-separated) whose connections start with a PROXY protocol header (v1 or v2) naming the client; required from them, ignored from others")
	f.DurationVar(&flags.ShutdownDelay, "shutdown-delay", 0, "on stop, keep serving this long after /readyz turns unready so a load balancer takes the node out first (default 0)")
	return cmd
}

func overrideSet(cmd *cobra.Command, cfg *serveConfig, flags serveConfig) {
	set := func(name string, dst *string, v string) {
		if cmd.Flags().Changed(name) {
			*dst = v
		}
	}
	set("data", &cfg.Data, flags.Data)
	set("database", &cfg.Database, flags.Database)
	cfg.databaseInArgv = cmd.Flags().Changed("database")
	if cmd.Flags().Changed("trusted-proxies") {
		cfg.TrustedProxies = flags.TrustedProxies
	}
	set("listen", &cfg.Listen, flags.Listen)
	set("proxy-listen", &cfg.ProxyListen, flags.ProxyListen)
	set("tls-cert", &cfg.TLSCert, flags.TLSCert)
	set("tls-key", &cfg.TLSKey, flags.TLSKey)
	set("node-id", &cfg.NodeID, flags.NodeID)
	set("log-level", &cfg.LogLevel, flags.LogLevel)
	set("peer-listen", &cfg.PeerListen, flags.PeerListen)
	set("peer-advertise", &cfg.PeerAdvertise, flags.PeerAdvertise)
	set("cluster-key-file", &cfg.ClusterKeyFile, flags.ClusterKeyFile)
	if cmd.Flags().Changed("shutdown-delay") {
		cfg.ShutdownDelay = flags.ShutdownDelay
	}
	if cmd.Flags().Changed("max-tunnels-per-connection") {
		cfg.MaxTunnelsPerConnection = flags.MaxTunnelsPerConnection
	}
}

// loadServeConfig reads the relay's config file over the defaults in cfg.
// It is read as strictly as an agent config, with the same messages: every
// problem with its file:line, an unknown key with the key it likely meant.
func loadServeConfig(path string, cfg *serveConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, config.MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return config.DecodeStrict(path, data, cfg)
}

// relayConfig maps the file's settings onto the relay's defaults: zero (or
// absent) keeps the default, a negative auth failure limit or tunnel cap
// turns that limit off, and a proxy rate without a burst may take the rate rounded up
// at once.
func (c serveConfig) relayConfig() relay.Config {
	rc := relay.DefaultConfig()
	if c.NodeID != "" {
		rc.NodeID = c.NodeID
	}
	setPositive(&rc.HeartbeatInterval, c.HeartbeatInterval)
	setPositive(&rc.DrainTimeout, c.DrainTimeout)
	setPositive(&rc.ShutdownDelay, c.ShutdownDelay)
	setPositive(&rc.IdleTimeout, c.IdleTimeout)
	setPositive(&rc.MaxStreamsPerTunnel, c.MaxStreamsPerTunnel)
	rc.MaxTunnelsPerConnection = limitOrOff(rc.MaxTunnelsPerConnection, c.MaxTunnelsPerConnection)
	c.handshakeConfig(&rc)
	setPositive(&rc.TokenOverlap, c.TokenOverlap)
	rc.AuthFailuresPerSource = limitOrOff(rc.AuthFailuresPerSource, c.AuthFailuresPerSource)
	rc.AuthFailuresPerCredential = limitOrOff(rc.AuthFailuresPerCredential, c.AuthFailuresPerCredential)
	if c.AuthLookupsWhileLimited != 0 { // negative: none
		rc.AuthLookupsWhileLimited = max(0, c.AuthLookupsWhileLimited)
	}
	rc.ProxyRatePerKey = c.ProxyRatePerKey
	rc.ProxyBurstPerKey = c.ProxyBurstPerKey
	if c.ProxyRatePerKey > 0 && c.ProxyBurstPerKey == 0 {
		rc.ProxyBurstPerKey = max(1, int(math.Ceil(c.ProxyRatePerKey)))
	}
	c.observeConfig(&rc)
	return rc
}

func setPositive[T int | time.Duration](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}

// limitOrOff reads a limit: 0 keeps def, negative is off.
func limitOrOff(def, v int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// openStore opens the store cfg names; schema migrations are logged to log.
func openStore(ctx context.Context, cfg serveConfig, log *slog.Logger) (store.Store, error) {
	db := cfg.Database
	if db == "" {
		// The URL may carry a password: the environment keeps it out of
		// the process list.
		db = os.Getenv(envDatabaseURL)
	}
	switch {
	case db == "":
		return sqlite.Open(ctx, filepath.Join(cfg.Data, "relay.db"), sqlite.WithLogger(log))
	case strings.HasPrefix(db, "sqlite:"):
		return sqlite.Open(ctx, strings.TrimPrefix(db, "sqlite:"), sqlite.WithLogger(log))
	case strings.HasPrefix(db, "postgres://"), strings.HasPrefix(db, "postgresql://"):
		s, err := postgres.Open(ctx, db, postgres.WithLogger(log))
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return s, nil
	}
	return nil, fmt.Errorf("--database %q: want sqlite:PATH or postgres://URL", redactDSN(db))
}

func serve(ctx context.Context, cfg serveConfig) error {
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	log, recent := keepRecentLogs(log)
	warnPasswordInArgv(log, cfg)
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	webhooks, err := loadWebhooks(cfg.Webhooks)
	if err != nil {
		return err
	}
	rc := cfg.relayConfig()
	rc.Store, rc.Logger, rc.Version, rc.Webhooks = st, log, version, webhooks
	rc.RecentLogs, rc.RecentAudit = recent.logs.Lines, recent.audit.Lines
	if rc.Cluster, err = cfg.clusterConfig(st); err != nil {
		return err
	}
	srv, err := relay.New(rc)
	if err != nil {
		return err
	}
	// Listeners first: admin.key appears only once the relay can serve,
	// so a port in use leaves no key behind for a relay that never ran.
	ls, err := cfg.listeners(log)
	if err != nil {
		return err
	}
	if _, err := srv.Bootstrap(ctx, cfg.Data); err != nil {
		closeListeners(ls)
		return err
	}
	warnPlaintext(log, cfg, ls)
	log.Info("relay listening", "api", ls.API.Addr().String(), "proxy", ls.Proxy.Addr().String(),
		"peer", cfg.PeerListen, "node", srv.NodeID(), "version", version, "tls", cfg.TLSCert != "",
		"trusted_proxies", strings.Join(cfg.TrustedProxies, ","))
	stopDebug, err := debugserve.Start(log)
	if err != nil {
		closeListeners(ls)
		return err
	}
	defer stopDebug()
	ctx, stop := stopsignal.Notify(ctx, log, srv.Close)
	defer stop()
	return srv.ServeListeners(ctx, ls)
}

// listeners opens every listener cfg names, or none.
func (cfg serveConfig) listeners(log *slog.Logger) (relay.Listeners, error) {
	var ls relay.Listeners
	trusted, err := cfg.trusted()
	if err != nil {
		return ls, err
	}
	// Peers dial each other directly, never through a load balancer.
	// Every listener batches writes under TLS: tunnels (agents on the API
	// listener, peer links) per WebSocket message, the proxy per write of
	// a CONNECT's data phase.
	addrs := []struct {
		addr    string
		dst     *net.Listener
		trusted proxyproto.Trusted
	}{{cfg.Listen, &ls.API, trusted}, {cfg.ProxyListen, &ls.Proxy, trusted}, {cfg.PeerListen, &ls.Peer, nil}}
	for i, a := range addrs {
		if a.addr == "" {
			continue
		}
		ln, err := listen(a.addr, a.trusted, cfg, log)
		if err != nil {
			for _, opened := range addrs[:i] {
				if *opened.dst != nil {
					_ = (*opened.dst).Close()
				}
			}
			return relay.Listeners{}, err
		}
		*a.dst = ln
	}
	return ls, nil
}

// listen opens addr with what sits under TLS: the PROXY header reader and
// the batch that lets a tunnel's WebSocket message, or a CONNECT's write,
// leave in one system call.
func listen(addr string, trusted proxyproto.Trusted, cfg serveConfig, log *slog.Logger) (net.Listener, error) {
	ln, err := listenTCP(addr)
	if err != nil {
		return nil, err
	}
	ln = acceptProxyHeaders(ln, trusted, log) // the header comes before TLS
	ln = tunnel.BatchListener(ln)
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		return ln, nil
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		_ = ln.Close()
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	kp := &keyPair{cert: cfg.TLSCert, key: cfg.TLSKey, log: log}
	if _, err := kp.get(nil); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}), nil
}

// keyPair reloads the certificate when either file changes, checking at
// most every few seconds, so renewed certificates apply without restart.
type keyPair struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	mtime   time.Time
	checked time.Time
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current != nil && time.Since(k.checked) < 5*time.Second {
		return k.current, nil
	}
	k.checked = time.Now()
	var newest time.Time
	for _, p := range []string{k.cert, k.key} {
		fi, err := os.Stat(p)
		if err != nil {
			if k.current != nil {
				return k.current, nil
			}
			return nil, fmt.Errorf("tls: %w", err)
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	if k.current != nil && !newest.After(k.mtime) {
		return k.current, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.current != nil {
			k.log.Error("tls: reload failed; keeping the previous certificate", "err", err)
			return k.current, nil
		}
		return nil, fmt.Errorf("tls: %w", err)
	}
	if k.current != nil {
		k.log.Info("tls: certificate reloaded", "cert", k.cert)
	}
	k.current, k.mtime = &c, newest
	return k.current, nil
}

// handshakeConfig sets the tunnel handshake pacer: a negative rate turns
// it off; a rate without a burst may start a tenth of a second's worth
// at once.
func (c serveConfig) handshakeConfig(rc *relay.Config) {
	switch {
	case c.TunnelHandshakesPerSecond < 0:
		rc.TunnelHandshakesPerSecond = 0
	case c.TunnelHandshakesPerSecond > 0:
		rc.TunnelHandshakesPerSecond = c.TunnelHandshakesPerSecond
		rc.TunnelHandshakeBurst = max(1, int(math.Ceil(c.TunnelHandshakesPerSecond/10)))
	}
	setPositive(&rc.TunnelHandshakeBurst, c.TunnelHandshakeBurst)
}
