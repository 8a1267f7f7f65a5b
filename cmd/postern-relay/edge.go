package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"

	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/proxyproto"
)

// Where the relay meets the outside: which load balancers may name the
// client of a connection (trusted_proxies), and keeping the database
// password out of argv.

// trusted reads trusted_proxies / --trusted-proxies.
func (cfg serveConfig) trusted() (proxyproto.Trusted, error) {
	t, err := proxyproto.ParseTrusted(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	return t, nil
}

// acceptProxyHeaders makes ln read a PROXY protocol header (v1 or v2) from
// every connection of a trusted proxy, and require one, before TLS or
// HTTP; other connections are served as they come. Without trusted
// proxies ln is returned as it is.
func acceptProxyHeaders(ln net.Listener, trusted proxyproto.Trusted, log *slog.Logger) net.Listener {
	if len(trusted) == 0 {
		return ln
	}
	return proxyproto.NewListener(ln, trusted, relay.DefaultHeaderTimeout, log)
}

// warnPasswordInArgv logs, once at start, that --database carries a
// password, which every local user can read in the process list. The
// password itself is never printed.
func warnPasswordInArgv(log *slog.Logger, cfg serveConfig) {
	if cfg.databaseInArgv && dsnHasPassword(cfg.Database) {
		log.Warn("--database carries a password, which any local user can read in the process list; " +
			"put the URL in the config file's database key or in " + envDatabaseURL + " instead")
	}
}

// dsnHasPassword reports whether a database URL carries a password, in its
// user information or as a password parameter. A URL that does not parse
// counts as carrying one when it could.
func dsnHasPassword(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil {
		return true
	}
	if u.User != nil {
		if _, set := u.User.Password(); set {
			return true
		}
	}
	return u.Query().Has("password")
}

// redactDSN hides the password of a database URL, and anything that does
// not parse as a URL, before it is printed.
func redactDSN(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "[unparsable URL]"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
