package relay

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store"
)

// Tunnel and auth states of the status API.
const (
	tunnelConnected      = "connected"
	tunnelDegraded       = "degraded"
	tunnelDisconnected   = "disconnected"
	tunnelNeverConnected = "never_connected"
	tunnelRevoked        = "revoked"

	authActive  = "active"
	authFailing = "failing"
	authRevoked = "revoked"
)

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := s.visibleConnection(w, r, k)
	if !ok {
		return
	}
	baseURL := r.URL.Query().Get("base_url")
	var target *baseTarget
	if baseURL != "" {
		t, aerr := parseBaseURL(baseURL)
		if aerr != nil {
			writeError(w, r, *aerr)
			return
		}
		target = &t
	}
	writeJSON(w, http.StatusOK, s.status(c, target, time.Now()))
}

type baseTarget struct {
	host string
	port int
}

// parseBaseURL takes http(s)://host[:port][/path] and returns its target.
func parseBaseURL(raw string) (baseTarget, *apiError) {
	bad := &apiError{reason: protocol.BadTarget, msg: "base_url must be an absolute http:// or https:// URL with a host"}
	if len(raw) > protocol.MaxBaseURLLen {
		return baseTarget{}, bad
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return baseTarget{}, bad
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return baseTarget{}, &apiError{reason: protocol.BadTarget, msg: "base_url port must be 1-65535"}
		}
		port = n
	}
	return baseTarget{host: u.Hostname(), port: port}, nil
}

// status computes the connection's state from the store row and the live
// sessions of this node.
func (s *Server) status(c store.Connection, target *baseTarget, now time.Time) api.Status {
	st := api.Status{ConnectionID: c.ID, Agents: []api.Agent{}, LastSeenAt: c.LastSeenAt}
	sessions := s.reg.sessions(c.ID)
	authAt, authMsg := s.reg.authFailure(c.ID)
	authRecent := !authAt.IsZero() && now.Sub(authAt) < s.cfg.AuthFailureWindow

	// Agents: one entry per agent id, its tunnels counted.
	byAgent := map[string]*api.Agent{}
	var newest *session
	degraded := false
	for _, sess := range sessions {
		beat := newestBeat(sess)
		if now.Sub(beat) > 2*s.cfg.HeartbeatInterval+s.cfg.HeartbeatInterval/2 {
			degraded = true
		}
		a := byAgent[sess.hello.AgentID]
		if a == nil {
			a = &api.Agent{
				AgentID:     sess.hello.AgentID,
				Hostname:    sess.hello.Hostname,
				Version:     sess.hello.Version,
				RelayNode:   s.cfg.NodeID,
				ConnectedAt: sess.connectedAt,
			}
			byAgent[sess.hello.AgentID] = a
		}
		a.Tunnels++
		a.ActiveStreams += int(sess.active.Load())
		if sess.connectedAt.Before(a.ConnectedAt) {
			a.ConnectedAt = sess.connectedAt
		}
		if beat.After(a.LastHeartbeatAt) {
			a.LastHeartbeatAt = beat
			a.Allowlist = sess.allowlist()
			if h, at := sess.snapshot(); !at.IsZero() {
				a.UptimeSeconds, a.Resolver, a.Errors = h.UptimeSeconds, h.Resolver, h.Errors
			}
		}
		if newest == nil || beat.After(newestBeat(newest)) {
			newest = sess
		}
	}
	for _, sess := range sessions {
		if a := byAgent[sess.hello.AgentID]; a != nil && a.Tunnels < sess.hello.Tunnels {
			degraded = true
		}
	}
	for _, sess := range sessions {
		if a := byAgent[sess.hello.AgentID]; a != nil {
			st.Agents = append(st.Agents, *a)
			delete(byAgent, sess.hello.AgentID)
		}
	}

	switch {
	case c.RevokedAt != nil:
		st.TunnelStatus, st.AuthStatus = tunnelRevoked, authRevoked
		st.Reason = protocol.ConnectionRevoked
		st.LastError = "connection revoked at " + c.RevokedAt.UTC().Format(time.RFC3339)
	case len(sessions) > 0:
		st.TunnelStatus, st.AuthStatus = tunnelConnected, authActive
		if degraded {
			st.TunnelStatus = tunnelDegraded
		}
		seen := newestBeat(newest)
		st.LastSeenAt = &seen
	default:
		st.AuthStatus = authActive
		if authRecent {
			st.AuthStatus = authFailing
			st.LastError = authMsg
		}
		e := s.offlineError(c)
		st.Reason = e.reason
		if c.FirstConnectedAt == nil {
			st.TunnelStatus = tunnelNeverConnected
		} else {
			st.TunnelStatus = tunnelDisconnected
		}
		if st.LastError == "" {
			st.LastError = e.msg
		}
	}

	st.AllowlistStatus = "unknown"
	if newest != nil {
		summary := newest.allowlist()
		st.AllowlistStatus = summary.Status
		if summary.Status == "invalid" && st.LastError == "" {
			st.LastError = "the agent refused its new allowlist and keeps the previous rules: " + summary.LastError
		}
		if target != nil {
			d := s.verdicts.decide(summary, target.host, target.port)
			st.AllowlistStatus = d.Verdict.String()
			if st.Reason == protocol.ReasonUnknown {
				st.Reason = protocol.VerdictReason(d.Verdict.String())
				if d.Verdict != allowlist.Allowed {
					st.LastError = d.Reason
				}
			}
		}
	}
	st.ProviderErrorCode = st.Reason.Info().ProviderErrorCode
	live := st.TunnelStatus == tunnelConnected || st.TunnelStatus == tunnelDegraded
	st.Ready = live && st.AuthStatus == authActive && st.Reason == protocol.ReasonUnknown &&
		(st.AllowlistStatus == "allowed" || (target == nil && st.AllowlistStatus == "configured"))
	return st
}

func newestBeat(s *session) time.Time {
	_, beat := s.snapshot()
	if beat.IsZero() {
		return s.connectedAt
	}
	return beat
}

// verdictCache compiles reported allowlists once per distinct rule set.
type verdictCache struct {
	mu    sync.Mutex
	lists map[string]*allowlist.List
}

func (vc *verdictCache) decide(a protocol.Allowlist, host string, port int) allowlist.Decision {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.lists == nil {
		vc.lists = make(map[string]*allowlist.List)
	}
	key := rulesKey(a)
	list, ok := vc.lists[key]
	if !ok {
		compiled, err := allowlist.Compile(toSpecs(a.Allow), toSpecs(a.Deny))
		if err != nil {
			return allowlist.Decision{Verdict: allowlist.Missing, Reason: "the agent's reported rules do not compile here: " + err.Error()}
		}
		if len(vc.lists) > 1024 {
			clear(vc.lists)
		}
		vc.lists[key] = compiled
		list = compiled
	}
	return list.Decide(host, port)
}

// rulesKey names a reported rule set by its content. The digest an agent
// reports cannot serve as the key: agents of different connections may
// report the same digest, or none, for different rules, and one would then
// be judged by the other's rules.
func rulesKey(a protocol.Allowlist) string {
	b, err := json.Marshal([2][]protocol.RuleSpec{a.Allow, a.Deny})
	if err != nil {
		return "" // not reachable: RuleSpec holds only strings
	}
	sum := sha256.Sum256(b)
	return string(sum[:])
}

func toSpecs(in []protocol.RuleSpec) []allowlist.RuleSpec {
	out := make([]allowlist.RuleSpec, len(in))
	for i, r := range in {
		out[i] = allowlist.RuleSpec{Host: r.Host, IP: r.IP, CIDR: r.CIDR, Ports: r.Ports}
	}
	return out
}
