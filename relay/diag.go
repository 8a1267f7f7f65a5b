package relay

import (
	"fmt"
	"net/url"
	"runtime"
	"time"

	"github.com/postern/postern/relay/api"
)

// diagnostics is the node's part of a support bundle (GET /v1/diag/...).
type diagnostics struct {
	s       *Server
	started time.Time
}

func (d diagnostics) Logs() []string  { return lines(d.s.cfg.RecentLogs) }
func (d diagnostics) Audit() []string { return lines(d.s.cfg.RecentAudit) }

func lines(fn func() []string) []string {
	if fn == nil {
		return nil
	}
	return fn()
}

// Info describes the node; the configuration holds no secret: webhook
// secrets and the cluster key are replaced, URLs lose their passwords.
func (d diagnostics) Info() any {
	c := d.s.cfg
	cfg := map[string]any{
		"heartbeat_interval": c.HeartbeatInterval.String(), "handshake_timeout": c.HandshakeTimeout.String(),
		"open_timeout": c.OpenTimeout.String(), "idle_timeout": c.IdleTimeout.String(),
		"token_overlap": c.TokenOverlap.String(), "auth_failure_window": c.AuthFailureWindow.String(),
		"drain_timeout": c.DrainTimeout.String(), "max_streams_per_tunnel": c.MaxStreamsPerTunnel,
		"event_keepalive": c.EventKeepAlive.String(), "auth_failures_per_source": c.AuthFailuresPerSource,
		"auth_failures_per_credential": c.AuthFailuresPerCredential, "auth_limit_window": c.AuthLimitWindow.String(),
		"proxy_rate_per_key": c.ProxyRatePerKey, "proxy_burst_per_key": c.ProxyBurstPerKey,
		"header_timeout": c.HeaderTimeout.String(), "history_retention": c.HistoryRetention.String(),
		"flap_threshold": c.FlapThreshold, "flap_window": c.FlapWindow.String(), "secure_cookies": c.SecureCookies,
	}
	hooks := make([]map[string]string, len(c.Webhooks))
	for i, w := range c.Webhooks {
		hooks[i] = map[string]string{"url": redactURL(w.URL), "workspace": w.Workspace, "secret": api.Redacted}
	}
	cfg["webhooks"] = hooks
	if cc := c.Cluster; cc != nil {
		cfg["cluster"] = map[string]string{"peer_advertise": redactURL(cc.PeerAdvertise), "lease": cc.Lease.String(), "key": api.Redacted}
	}
	return api.DiagInfo{
		NodeID: c.NodeID, Version: c.Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		StartedAt: d.started.UTC(), Goroutines: runtime.NumGoroutine(), Store: fmt.Sprintf("%T", c.Store),
		Cluster: c.Cluster != nil, Config: cfg,
	}
}

// redactURL drops a URL's password; what does not parse is replaced.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return api.Redacted
	}
	return u.Redacted()
}
