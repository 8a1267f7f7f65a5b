package config

import (
	"strconv"
	"strings"
)

// Environment variables read by this package. An override is applied when the
// variable is set and not empty, and wins over the file. The agent token has
// no file setting of its own; see Config.LoadToken.
const (
	EnvRelayURL     = "POSTERN_RELAY_URL" // comma-separated
	EnvTokenFile    = "POSTERN_TOKEN_FILE"
	EnvMode         = "POSTERN_MODE"
	EnvTunnels      = "POSTERN_TUNNELS"
	EnvStatusListen = "POSTERN_STATUS_LISTEN"
	EnvAuditLog     = "POSTERN_AUDIT_LOG"
	EnvEgressProxy  = "POSTERN_EGRESS_PROXY"
	EnvCAFile       = "POSTERN_CA_FILE"
	EnvDNSServers   = "POSTERN_DNS_SERVERS" // comma-separated
	EnvAgentToken   = "POSTERN_AGENT_TOKEN"
)

// applyEnv overwrites file settings with POSTERN_* overrides. Their values are
// validated with the rest, and problems name the variable.
func applyEnv(fc *fileConfig, getenv Getenv, p *problems) {
	for name, dst := range map[string]*scalar{
		EnvTokenFile:    &fc.TokenFile,
		EnvMode:         &fc.Mode,
		EnvStatusListen: &fc.StatusListen,
		EnvAuditLog:     &fc.AuditLog,
		EnvEgressProxy:  &fc.EgressProxy,
		EnvCAFile:       &fc.CAFile,
	} {
		if v, ok := lookup(getenv, name); ok {
			*dst = scalar{value: v, set: true, from: origin{env: name}}
		}
	}
	if v, ok := lookup(getenv, EnvRelayURL); ok {
		fc.RelayURL.stringList = envList(EnvRelayURL, v)
	}
	if v, ok := lookup(getenv, EnvDNSServers); ok {
		fc.DNS.Servers = envList(EnvDNSServers, v)
	}
	if v, ok := lookup(getenv, EnvTunnels); ok {
		from := origin{env: EnvTunnels}
		n, err := strconv.Atoi(v)
		if err != nil {
			p.add(from, "want an integer, got %s", quote(v))
		} else {
			fc.Tunnels = integer{value: n, set: true, from: from}
		}
	}
}

func lookup(getenv Getenv, name string) (string, bool) {
	v, ok := getenv(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// envList splits a comma-separated variable, dropping empty items so that a
// trailing comma is harmless.
func envList(name, v string) stringList {
	from := origin{env: name}
	l := stringList{set: true, from: from}
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			l.items = append(l.items, scalar{value: item, set: true, from: from})
		}
	}
	return l
}
