package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime"
	"strings"
)

// Warnings lists what in c works but is likely not what its author meant,
// each naming the file and line at fault: a host rule for localhost (the
// agent always blocks loopback unless an ip rule names the address) and a
// token file that group or others can read.
func (c *Config) Warnings() []string {
	var out []string
	if !c.ipRuleNamesLoopback() {
		for i, r := range c.Allow {
			h := strings.ToLower(strings.TrimSuffix(r.Host, "."))
			if h == "localhost" || strings.HasSuffix(h, ".localhost") {
				out = append(out, fmt.Sprintf("%s:%d: allow[%d]: host %s is a loopback name, and loopback is always blocked; "+
					"to reach a service on the agent's own machine, use an ip rule such as ip: 127.0.0.1", c.Path, r.Line, i, quote(r.Host)))
			}
		}
	}
	if w := tokenFileWarning(c.TokenFile); w != "" {
		out = append(out, w)
	}
	return out
}

// ipRuleNamesLoopback reports whether an allow ip rule names a loopback
// address, the one way to open loopback.
func (c *Config) ipRuleNamesLoopback() bool {
	for _, r := range c.Allow {
		if a, err := netip.ParseAddr(r.IP); err == nil && a.Unmap().IsLoopback() {
			return true
		}
	}
	return false
}

// tokenFileWarning says when the token file can be read by group or
// others, which run refuses; "" when it cannot, or cannot be checked. A
// file not there yet says nothing: validate often runs before the token is
// installed, and run names a missing file itself.
func tokenFileWarning(path string) string {
	if path == "" || runtime.GOOS == "windows" {
		return ""
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		return fmt.Sprintf("token_file %s: %v", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Sprintf("token_file %s has mode %04o, so other users can read the agent token and the agent will refuse it; run: chmod 600 %s",
			path, perm, shellQuote(path))
	}
	return ""
}
