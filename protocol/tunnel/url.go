package tunnel

import (
	"net/url"
	"strings"

	"github.com/postern/postern/protocol"
)

// URL is the tunnel endpoint under a relay base URL (spec.md 3.1): the base
// path with a trailing "/" dropped, protocol.TunnelPath appended, and no
// query or fragment. wss://relay.example.com/postern/ gives
// wss://relay.example.com/postern/v1/tunnel.
func URL(base *url.URL) string { return endpoint(base, protocol.TunnelPath) }

// endpoint is path under base, built as URL builds the tunnel's.
func endpoint(base *url.URL, path string) string {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath, u.RawQuery, u.Fragment, u.RawFragment = "", "", "", ""
	return u.String()
}

// Redact names a URL without its user info, for logs and errors.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
