package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/allowlist"
)

// validate judges every value of fc, fills in defaults and builds the Config.
// dir anchors relative paths written in the file. Problems go to p; the
// returned Config is meaningful only if p stays empty.
func validate(fc *fileConfig, dir string, hostname func() (string, error), p *problems) *Config {
	c := &Config{
		Tunnels:      DefaultTunnels,
		StatusListen: DefaultStatusListen,
		DNSTimeout:   DefaultDNSTimeout,
		Mode:         ModeEnforce,
		LogLevel:     slog.LevelInfo,
	}
	c.RelayURLs = validateRelayURLs(fc.RelayURL.stringList, p)
	c.TokenFile = filePath(fc.TokenFile, dir, "token_file", p)
	c.CAFile = filePath(fc.CAFile, dir, "ca_file", p)
	c.AuditLog = filePath(fc.AuditLog, dir, "audit_log", p)

	apply(fc.Mode, "mode", ParseMode, &c.Mode, p)
	for i, s := range fc.DNS.Servers.items {
		addr, err := parseDNSServer(s.value)
		if err != nil {
			p.add(s.from, "dns.servers[%d]: %v", i, err)
			continue
		}
		c.DNSServers = append(c.DNSServers, addr)
	}
	apply(fc.DNS.Timeout, "dns.timeout", checkDNSTimeout, &c.DNSTimeout, p)
	apply(fc.EgressProxy, "egress_proxy", parseEgressProxy, &c.EgressProxy, p)
	apply(fc.Tunnels, "tunnels", checkTunnels, &c.Tunnels, p)
	apply(fc.StatusListen, "status_listen", func(s string) (string, error) { return s, checkListenAddr(s) }, &c.StatusListen, p)
	apply(fc.LogLevel, "log_level", parseLogLevel, &c.LogLevel, p)
	c.AgentID = agentID(fc.AgentID, hostname, p)
	var rs allowlist.Rules
	rs, c.Rules = compileRules(fc, p)
	c.Allow, c.Deny, c.Blocked = rs.Allow, rs.Deny, rs.Blocked
	return c
}

// apply stores a setting given in the file or the environment into dst,
// through parse; what parse refuses is reported at the setting's origin
// under key. dst takes parse's result either way, since a Config with
// problems is never used.
func apply[T settingValue, V any](s setting[T], key string, parse func(T) (V, error), dst *V, p *problems) {
	if !s.set {
		return
	}
	v, err := parse(s.value)
	if err != nil {
		p.add(s.from, "%s: %v", key, err)
	}
	*dst = v
}

func checkDNSTimeout(d time.Duration) (time.Duration, error) {
	if d <= 0 || d > MaxDNSTimeout {
		return d, fmt.Errorf("%s is out of range; want more than 0 and at most %s", d, MaxDNSTimeout)
	}
	return d, nil
}

func checkTunnels(n int) (int, error) {
	if n < 1 || n > MaxTunnels {
		return n, fmt.Errorf("%d is out of range; want 1 to %d", n, MaxTunnels)
	}
	return n, nil
}

// validateRelayURLs checks each relay base URL; see parseRelayURL.
func validateRelayURLs(l stringList, p *problems) []*url.URL {
	if len(l.items) == 0 {
		switch {
		case l.bad:
		case l.set:
			p.add(l.from, "relay_url: the list is empty; give the relay's wss:// base URL")
		case l.from.line > 0:
			p.add(l.from, "relay_url: empty value; give the relay's wss:// base URL")
		default:
			p.add(origin{}, "relay_url is missing; give the relay's wss:// base URL (or set %s)", EnvRelayURL)
		}
		return nil
	}
	urls := make([]*url.URL, 0, len(l.items))
	seen := make(map[string]bool, len(l.items))
	for _, s := range l.items {
		u, err := parseRelayURL(s.value)
		if err != nil {
			p.add(s.from, "relay_url: %v", err)
			continue
		}
		if seen[u.String()] {
			p.add(s.from, "relay_url: %s is listed twice", u)
			continue
		}
		seen[u.String()] = true
		urls = append(urls, u)
	}
	return urls
}

// parseRelayURL checks a relay base URL: wss://host[:port][/path], or ws://
// to a loopback host. The error never repeats userinfo, which could hold a
// pasted secret.
func parseRelayURL(raw string) (*url.URL, error) {
	if raw != "" && !strings.Contains(raw, "://") {
		return nil, missingScheme(raw)
	}
	u, err := parseURL(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "wss":
	case "ws":
		if !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%s: ws:// is unencrypted, so the agent token and every tunnelled byte "+
				"would cross the network in clear text; use wss://, or ws:// only to a loopback relay "+
				"(127.0.0.0/8, ::1, localhost) for testing", quote(u.Redacted()))
		}
	case "http", "https":
		return nil, fmt.Errorf("%s: the relay is reached over WebSocket; write wss:// instead of %s://",
			quote(u.Redacted()), u.Scheme)
	default:
		return nil, fmt.Errorf("%s: scheme must be wss:// (or ws:// to a loopback relay)", quote(u.Redacted()))
	}
	if u.User != nil {
		return nil, errors.New("must not hold credentials; the agent authenticates with its token")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("%s: a base URL takes no query or fragment; the agent appends /v1/tunnel to its path",
			quote(u.Redacted()))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if strings.HasSuffix(u.Path, "/v1/tunnel") {
		return nil, fmt.Errorf("%s: give the relay's base URL; the agent appends /v1/tunnel itself", quote(u.Redacted()))
	}
	return u, nil
}

// missingScheme explains a relay URL written without a scheme, such as
// 127.0.0.1:8080 or relay.example.com. The input is shown only when it holds
// no "@", which could mean pasted credentials.
func missingScheme(raw string) error {
	if strings.Contains(raw, "@") {
		return errors.New("no scheme; write wss:// before the relay's address (ws:// only to a loopback relay, for testing)")
	}
	shown := shorten(raw)
	return fmt.Errorf("%s has no scheme; write wss://%s (or ws://%s to a loopback relay, for testing)", quote(raw), shown, shown)
}

// parseEgressProxy checks the proxy for the agent's own connections to the
// relay: http:// or https://, optionally with Basic auth credentials, which
// are never repeated in errors.
func parseEgressProxy(raw string) (*url.URL, error) {
	u, err := parseURL(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%s: scheme must be http:// or https://", quote(u.Redacted()))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s: a proxy URL takes no path, query or fragment", quote(u.Redacted()))
	}
	u.Path = ""
	return u, nil
}

// parseURL parses an absolute URL with a host and a valid port. The error
// never holds the input, which may carry a password.
func parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("empty URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a valid URL: %w", err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme == "" || u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%s: want an absolute URL such as wss://relay.example.com", quote(u.Redacted()))
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%s: port %s is out of range", quote(u.Redacted()), port)
		}
	}
	return u, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// parseDNSServer turns "10.0.0.2", "10.0.0.2:5353", "fd00::53" or
// "[fd00::53]:53" into host:port. A name is refused: the resolver is what
// would look it up.
func parseDNSServer(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("%s: port 0 is not a DNS port", quote(s))
		}
		return ap.String(), nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(ip.String(), DefaultDNSPort), nil
	}
	return "", fmt.Errorf("%s is not an IP address or IP:port; a DNS server must be given by address", quote(s))
}

// checkListenAddr checks a status server address: host:port with an IP
// literal, "localhost" or an empty host (all interfaces), and a port 1-65535.
func checkListenAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s: want host:port such as %s", quote(s), DefaultStatusListen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s: port must be 1 to 65535", quote(s))
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "" && host != "localhost" {
		return fmt.Errorf("%s: host must be an IP address or localhost", quote(s))
	}
	return nil
}

func parseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return slog.LevelInfo, fmt.Errorf("unknown level %s; want debug, info, warn or error", quote(s))
	}
}

// filePath returns a path setting, resolving a relative path from the file
// against the file's directory. A relative path from the environment is left
// relative to the working directory, as a shell user would expect.
func filePath(s scalar, dir, key string, p *problems) string {
	if !s.set {
		return ""
	}
	if s.value == "" {
		p.add(s.from, "%s: empty path", key)
		return ""
	}
	if s.from.env == "" && !filepath.IsAbs(s.value) {
		return filepath.Join(dir, s.value)
	}
	return s.value
}

const maxAgentID = 64

// agentID returns agent_id from the file, or one derived from the hostname.
func agentID(s scalar, hostname func() (string, error), p *problems) string {
	if s.set {
		if err := checkAgentID(s.value); err != nil {
			p.add(s.from, "agent_id: %v", err)
		}
		return s.value
	}
	h, err := hostname()
	if err != nil {
		p.add(origin{}, "agent_id is not set and the hostname is unavailable (%v); set agent_id", err)
		return ""
	}
	id := agentIDFromHostname(h)
	if id == "" {
		p.add(origin{}, "agent_id is not set and hostname %s yields no usable id; set agent_id", quote(h))
	}
	return id
}

func checkAgentID(id string) error {
	if id == "" || len(id) > maxAgentID {
		return fmt.Errorf("%s: want 1 to %d characters", quote(id), maxAgentID)
	}
	for _, r := range id {
		if !isIDChar(r) {
			return fmt.Errorf("%s: use only letters, digits, '.', '_' and '-'", quote(id))
		}
	}
	return nil
}

// agentIDFromHostname lowercases the hostname and replaces characters an id
// may not hold with '-'.
func agentIDFromHostname(h string) string {
	h = strings.Trim(strings.ToLower(h), ".")
	id := strings.Map(func(r rune) rune {
		if isIDChar(r) {
			return r
		}
		return '-'
	}, h)
	if len(id) > maxAgentID {
		id = id[:maxAgentID]
	}
	return strings.Trim(id, "-.")
}

func isIDChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}
