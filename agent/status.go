package agent

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/postern/postern/agent/stream"
	"github.com/postern/postern/protocol"
)

// LocalStatus is what the agent's status endpoint shows an admin on the
// machine it runs on. It never contains the token.
type LocalStatus struct {
	AgentID string `json:"agent_id"`
	// InstanceID names this run of the agent to the relay.
	InstanceID    string         `json:"instance_id"`
	Hostname      string         `json:"hostname"`
	Version       string         `json:"version"`
	Ready         bool           `json:"ready"`
	UptimeSeconds int64          `json:"uptime_seconds"`
	TunnelsWanted int            `json:"tunnels_wanted"`
	TunnelsUp     int            `json:"tunnels_up"`
	Tunnels       []TunnelStatus `json:"tunnels"`
	// Duplicate is set while the relay says another agent process is
	// connected with the same agent id (DUPLICATE_AGENT in Warnings).
	Duplicate bool      `json:"duplicate"`
	Warnings  []Warning `json:"warnings,omitempty"`
	// Down says why tunnels are missing, while some are.
	Down          *TunnelsDown   `json:"down,omitempty"`
	ActiveStreams int            `json:"active_streams"`
	BytesIn       uint64         `json:"bytes_in"`
	BytesOut      uint64         `json:"bytes_out"`
	Allowlist     LocalAllowlist `json:"allowlist"`
	// Refusals counts the streams refused since the agent started, by
	// reason; LastRefusals are the newest of them, newest first.
	Refusals     map[protocol.Reason]int `json:"refusals"`
	LastRefusals []stream.Refusal        `json:"last_refusals"`
}

// LocalAllowlist is the allowlist summary the agent reports to the relay,
// plus the entries of the config's blocked list, which the summary's
// sha256 covers but only this machine's status lists.
type LocalAllowlist struct {
	protocol.Allowlist
	Blocked []string `json:"blocked,omitempty"`
}

// TunnelStatus is one live tunnel.
type TunnelStatus struct {
	Slot        int       `json:"slot"`
	Relay       string    `json:"relay"`
	NodeID      string    `json:"node_id"`
	ConnectedAt time.Time `json:"connected_at"`
}

// Status returns the agent's local view.
func (a *Agent) Status() LocalStatus {
	a.mu.Lock()
	tunnels := make([]TunnelStatus, 0, len(a.tunnels))
	for slot, t := range a.tunnels {
		tunnels = append(tunnels, TunnelStatus{Slot: slot, Relay: t.URL, NodeID: t.NodeID, ConnectedAt: t.ConnectedAt})
	}
	down := a.downViewLocked()
	warnings := a.warningsLocked()
	a.mu.Unlock()
	sort.Slice(tunnels, func(i, j int) bool { return tunnels[i].Slot < tunnels[j].Slot })
	st := a.streams.Stats()
	refused, last := a.streams.Refusals()
	pol := a.Policy()
	return LocalStatus{
		Refusals:      refused,
		LastRefusals:  last,
		AgentID:       a.agentID,
		InstanceID:    a.instanceID,
		Duplicate:     len(warnings) > 0,
		Warnings:      warnings,
		Hostname:      a.hostname,
		Version:       a.opts.Version,
		Ready:         len(tunnels) > 0,
		UptimeSeconds: int64(time.Since(a.started).Seconds()),
		TunnelsWanted: a.tunnelsWanted(),
		TunnelsUp:     len(tunnels),
		Tunnels:       tunnels,
		Down:          down,
		ActiveStreams: st.Active,
		BytesIn:       st.BytesIn,
		BytesOut:      st.BytesOut,
		Allowlist:     LocalAllowlist{Allowlist: pol.Summary, Blocked: pol.Blocked},
	}
}

// StatusHandler serves, for status_listen: / (a read-only page of
// LocalStatus for people), /healthz (the process runs), /readyz (at least
// one tunnel is up), /status (LocalStatus as JSON), and for support
// bundles, to loopback clients only, /debug/logs and /debug/pprof/.
func (a *Agent) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.servePage)
	mux.Handle("GET /page.css", pageStyle())
	a.routeDebug(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatusJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if a.TunnelsUp() == 0 {
			writeStatusJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "no tunnel to the relay is up"})
			return
		}
		writeStatusJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeStatusJSON(w, http.StatusOK, a.Status())
	})
	return mux
}

func writeStatusJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
