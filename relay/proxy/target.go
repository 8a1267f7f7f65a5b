package proxy

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/postern/postern/protocol"
)

// CheckTarget checks the target of a CONNECT as the client sent it: plain
// host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
// User info, paths, queries, percent-encoding and bracketed IPv4 are
// refused BAD_TARGET with what to write instead, rather than read in some
// way the client did not mean.
func CheckTarget(raw string) *protocol.Error {
	shown := raw
	if len(shown) > 300 {
		shown = shown[:300] + "…"
	}
	switch {
	case strings.Contains(raw, "@"):
		return protocol.Errorf(protocol.BadTarget, "target %q carries user info: CONNECT takes host:port, and credentials go in Proxy-Authorization", shown)
	case strings.ContainsAny(raw, "/?#"):
		return protocol.Errorf(protocol.BadTarget, "target %q has a path or query: CONNECT takes host:port only", shown)
	case strings.Contains(raw, "%"):
		return protocol.Errorf(protocol.BadTarget, "target %q is percent-encoded: write the host name as it is", shown)
	}
	host, _, e := SplitTarget(raw)
	if e != nil {
		return e
	}
	if strings.HasPrefix(raw, "[") {
		a, err := netip.ParseAddr(host)
		switch {
		case err != nil:
			return protocol.Errorf(protocol.BadTarget, "target %q: brackets hold an IPv6 address, and %q is not one", shown, host)
		case a.Is4():
			return protocol.Errorf(protocol.BadTarget, "target %q: an IPv4 address goes without brackets (%s)", shown, strings.Replace(raw, "["+host+"]", host, 1))
		}
		return nil
	}
	if i := strings.IndexFunc(host, func(c rune) bool { return !hostChar(c) }); i >= 0 {
		return protocol.Errorf(protocol.BadTarget, "target host %q has a character (%q) no host name has", host, host[i:i+1])
	}
	return nil
}

// hostChar reports whether c may appear in a host name or IPv4 address on
// the wire: IDNA names arrive as ASCII (xn--), underscores occur in
// internal names.
func hostChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// connectTarget returns the target of a CONNECT request line ("CONNECT t
// HTTP/1.1"), or ok false for any other line.
func connectTarget(line []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("CONNECT "))
	if !ok {
		return "", false
	}
	i := bytes.LastIndexByte(rest, ' ')
	if i < 0 {
		return string(rest), true
	}
	return string(rest[:i]), true
}
