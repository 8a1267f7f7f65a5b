package config

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern/postern/allowlist"
)

// Defaults applied when the file and the environment leave a setting out.
const (
	DefaultTunnels      = 2
	DefaultStatusListen = "127.0.0.1:7070"
	DefaultDNSTimeout   = 2 * time.Second
	DefaultDNSPort      = "53"

	// MaxTunnels bounds tunnels; more WebSockets than relay nodes buys nothing.
	MaxTunnels = 16
	// MaxDNSTimeout bounds dns.timeout; a slower answer is a broken resolver.
	MaxDNSTimeout = 30 * time.Second
)

// Mode says what the agent does with a request the allowlist denies.
type Mode int

const (
	// ModeUnknown is the zero value; a loaded Config never holds it.
	ModeUnknown Mode = iota
	// ModeEnforce refuses denied requests.
	ModeEnforce
	// ModeReport lets through requests that no allow rule covers
	// (ALLOWLIST_MISSING) and records in the audit log that enforce would
	// have refused them, for a safe rollout of new rules. Deny rules and
	// the always-blocked set refuse in this mode too.
	ModeReport
)

func (m Mode) String() string {
	switch m {
	case ModeEnforce:
		return "enforce"
	case ModeReport:
		return "report"
	default:
		return fmt.Sprintf("unknown(%d)", int(m))
	}
}

// MarshalText writes the mode as it appears in the config file.
func (m Mode) MarshalText() ([]byte, error) {
	if m != ModeEnforce && m != ModeReport {
		return nil, fmt.Errorf("mode %d has no name", int(m))
	}
	return []byte(m.String()), nil
}

// ParseMode reads "enforce" or "report".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "enforce":
		return ModeEnforce, nil
	case "report":
		return ModeReport, nil
	default:
		return ModeUnknown, fmt.Errorf("unknown mode %s; want enforce or report", quote(s))
	}
}

// Config is a validated agent configuration. Everything in it has been
// checked; defaults are filled in. It holds no secret: the agent token is
// read separately by LoadToken, and EgressProxy's password is redacted by
// String.
type Config struct {
	// Path is the config file (absolute when it came from Load). Relative
	// paths in the file are resolved against its directory.
	Path string

	// RelayURLs are the relay base URLs (wss://, or ws:// to a loopback
	// host). The agent connects to /v1/tunnel under each.
	RelayURLs []*url.URL

	// TokenFile holds the agent token; empty when the token comes only from
	// POSTERN_AGENT_TOKEN.
	TokenFile string

	// Allow and Deny are the rules as written, and Blocked the addresses
	// and blocks added to the always-blocked set, each with its line in
	// the file; Rules is their compiled form.
	Allow, Deny []allowlist.RuleSpec
	Blocked     []allowlist.BlockedSpec
	Rules       *allowlist.List

	// Mode is what happens to a request no allow rule covers: refused
	// (enforce) or let through and audited (report). Deny rules, the
	// always-blocked set and failed lookups refuse in both modes.
	Mode Mode

	// DNSServers are the resolvers as host:port (port 53 unless given);
	// empty means the system's (resolv.conf).
	DNSServers []string
	// DNSTimeout bounds one DNS exchange.
	DNSTimeout time.Duration

	// EgressProxy is the HTTP(S) proxy for the agent's connections to the
	// relay, possibly with Basic auth credentials; nil means HTTPS_PROXY and
	// NO_PROXY from the environment decide. Never used for targets.
	EgressProxy *url.URL

	// CAFile is a PEM bundle trusted for the relay (and proxy) in addition
	// to the system roots; empty when not set.
	CAFile string

	// Tunnels is how many WebSockets the agent holds to the relay.
	Tunnels int

	// StatusListen is the local status server's host:port.
	StatusListen string

	// AuditLog is the JSON-lines audit log's path; empty when not set.
	AuditLog string

	// AgentID names this agent in the relay's status; from the file or
	// derived from the hostname.
	AgentID string

	// LogLevel is the least severe level the agent logs.
	LogLevel slog.Level
}

// Getenv looks up one environment variable; os.LookupEnv fits. Load and
// Parse accept nil to mean an empty environment.
type Getenv = func(string) (string, bool)

// Load reads, decodes and validates the config file at path, applying the
// POSTERN_* overrides from getenv. An I/O error is returned as is; problems
// with the content are returned all at once, joined, each an *Error matching
// ErrInvalid.
func Load(path string, getenv Getenv) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parse(path, abs, data, getenv, os.Hostname)
}

// Parse decodes and validates config file content. name is used in messages
// and as Config.Path, and its directory anchors relative paths.
func Parse(name string, data []byte, getenv Getenv) (*Config, error) {
	return parse(name, name, data, getenv, os.Hostname)
}

func parse(name, path string, data []byte, getenv Getenv, hostname func() (string, error)) (*Config, error) {
	if getenv == nil {
		getenv = func(string) (string, bool) { return "", false }
	}
	p := &problems{file: name}
	fc, ok := decodeFile(data, p)
	if !ok {
		return nil, p.err()
	}
	applyEnv(fc, getenv, p)
	c := validate(fc, filepath.Dir(path), hostname, p)
	if p.count() > 0 {
		return nil, p.err()
	}
	c.Path = path
	return c, nil
}

// String summarises the configuration for logs and `validate` output. It
// holds no secret.
func (c *Config) String() string {
	urls := make([]string, len(c.RelayURLs))
	for i, u := range c.RelayURLs {
		urls[i] = u.Redacted()
	}
	proxy := "from environment"
	if c.EgressProxy != nil {
		proxy = c.EgressProxy.Redacted()
	}
	dns := "system"
	if len(c.DNSServers) > 0 {
		dns = strings.Join(c.DNSServers, ",")
	}
	return fmt.Sprintf("config %s: relay_url=%s mode=%s allow=%d deny=%d blocked=%d dns=%s dns_timeout=%s "+
		"egress_proxy=%s ca_file=%s tunnels=%d status_listen=%s audit_log=%s agent_id=%s log_level=%s token_file=%s",
		c.Path, strings.Join(urls, ","), c.Mode, len(c.Allow), len(c.Deny), len(c.Blocked), dns, c.DNSTimeout,
		proxy, orNone(c.CAFile), c.Tunnels, c.StatusListen, orNone(c.AuditLog), c.AgentID,
		strings.ToLower(c.LogLevel.String()), orNone(c.TokenFile))
}

// LogValue lets slog print a Config as a group of its settings, with the
// same redaction as String.
func (c *Config) LogValue() slog.Value {
	urls := make([]string, len(c.RelayURLs))
	for i, u := range c.RelayURLs {
		urls[i] = u.Redacted()
	}
	attrs := []slog.Attr{
		slog.String("path", c.Path),
		slog.Any("relay_url", urls),
		slog.String("mode", c.Mode.String()),
		slog.Int("allow", len(c.Allow)),
		slog.Int("deny", len(c.Deny)),
		slog.Int("blocked", len(c.Blocked)),
		slog.Any("dns_servers", c.DNSServers),
		slog.Duration("dns_timeout", c.DNSTimeout),
		slog.Int("tunnels", c.Tunnels),
		slog.String("status_listen", c.StatusListen),
		slog.String("agent_id", c.AgentID),
	}
	if c.EgressProxy != nil {
		attrs = append(attrs, slog.String("egress_proxy", c.EgressProxy.Redacted()))
	}
	return slog.GroupValue(attrs...)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
