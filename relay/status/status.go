// Package status says what state each connection of a relay node is in:
// it computes the status API's answer from the connection's store row, the
// broker's live sessions and recent refused agent tokens, remembers what
// it last published, and publishes every transition (tunnel, auth,
// allowlist) as an event. It also keeps the store's record of when agents
// connected and were last seen, as the broker's Observer.
//
// It judges a base URL only by the rules the agents reported; live
// reachability is the agent's check.
package status

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/ratelimit"
	"github.com/postern/postern/relay/store"
)

// Tunnel and auth states of the status API.
const (
	TunnelConnected      = "connected"
	TunnelDegraded       = "degraded"
	TunnelDisconnected   = "disconnected"
	TunnelNeverConnected = "never_connected"
	TunnelRevoked        = "revoked"

	AuthActive  = "active"
	AuthFailing = "failing"
	AuthRevoked = "revoked"
)

// FailingAfter is how many refused agent tokens in a row, each within
// AuthFailureWindow of the one before, turn auth_status to failing. One
// refusal is not enough: token ids are not secret, so a single wrong
// secret proves nothing about the connection's own agents.
const FailingAfter = 2

// Config configures a Keeper.
type Config struct {
	// NodeID is reported as each agent's relay node.
	NodeID string
	// HeartbeatInterval is the Health period agents were asked for.
	HeartbeatInterval time.Duration
	// AuthFailureWindow is how long refused agent tokens keep a
	// connection's auth_status at failing: from the second of a run of
	// refusals each within the window of the one before (see
	// FailingAfter) until the window has passed since the last one.
	AuthFailureWindow time.Duration
	// Flap tells a flapping tunnel; its zero value turns that off.
	Flap FlapPolicy
	// Now is the clock of the event budgets; time.Now when nil.
	Now func() time.Time
}

// Keeper computes statuses and publishes their transitions through its
// Book.
type Keeper struct {
	cfg   Config
	store store.Store
	book  Book
	log   *slog.Logger

	verdicts verdictCache
	// allowlistEvents is each connection's budget of allowlist events.
	allowlistEvents *ratelimit.Limiter
}

// Each connection's allowlist events draw on a budget of
// AllowlistEventBurst that refills one event per AllowlistEventEvery: an
// agent that keeps changing what it reports cannot flood the event
// streams and webhooks every tenant shares. Changes beyond the budget are
// announced, as one event from the last announced state, once it refills.
const (
	AllowlistEventBurst = 10
	AllowlistEventEvery = time.Minute
)

// New returns a Keeper keeping its book in book.
func New(cfg Config, st store.Store, book Book, log *slog.Logger) *Keeper {
	return &Keeper{cfg: cfg, store: st, book: book, log: log,
		allowlistEvents: ratelimit.New(1/AllowlistEventEvery.Seconds(), AllowlistEventBurst, ratelimit.MaxKeys, cfg.Now)}
}

// announceAllowlist takes one allowlist event from the connection's
// budget.
func (k *Keeper) announceAllowlist(connID string) bool {
	_, ok := k.allowlistEvents.Take(connID)
	return ok
}

// Target is the host and port a base URL names.
type Target struct {
	Host string
	Port int
}

// ParseBaseURL takes http(s)://host[:port][/path] and returns its target;
// anything else is BAD_TARGET.
func ParseBaseURL(raw string) (Target, *protocol.Error) {
	bad := protocol.Errorf(protocol.BadTarget, "base_url must be an absolute http:// or https:// URL with a host")
	if len(raw) > protocol.MaxBaseURLLen {
		return Target{}, bad
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return Target{}, bad
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Target{}, protocol.Errorf(protocol.BadTarget, "base_url port must be 1-65535")
		}
		port = n
	}
	return Target{Host: u.Hostname(), Port: port}, nil
}

// Status computes the connection's state from its store row and the
// sessions on every node; with a target, allowlist_status is the verdict
// of the reported rules on it. An error means the book could not be read.
func (k *Keeper) Status(ctx context.Context, c store.Connection, target *Target, now time.Time) (api.Status, error) {
	views, err := k.book.Views(ctx, c.ID)
	if err != nil {
		return api.Status{}, err
	}
	f, err := k.book.Failure(ctx, c.ID)
	if err != nil {
		return api.Status{}, err
	}
	st := k.compute(c, views, f, target, now)
	if pub, ok := k.book.Published(c.ID); ok && pub.Flapping && st.TunnelStatus != TunnelRevoked {
		st.TunnelStatus, st.Ready = TunnelFlapping, false
		st.Warnings = append(st.Warnings, api.Warning{Code: api.WarningFlapping, Message: fmt.Sprintf(
			"the tunnel went up and down more than %d times within %s; it is %s at this moment, and each change is in the history",
			k.cfg.Flap.Threshold, k.cfg.Flap.Window, momentary(st))})
	}
	return st, nil
}

// momentary says whether a flapping connection has a tunnel up now.
func momentary(st api.Status) string {
	if len(st.Agents) > 0 {
		return "up"
	}
	return "down"
}

// judge is the Judge of the books at now: statuses without a target.
func (k *Keeper) judge(now time.Time) Judge {
	return Judge{Now: now, node: k.cfg.NodeID, flap: k.cfg.Flap, announce: k.announceAllowlist,
		compute: func(c store.Connection, views []View, f store.Failure) api.Status {
			return k.compute(c, views, f, nil, now)
		}}
}

func (k *Keeper) compute(c store.Connection, views []View, f store.Failure, target *Target, now time.Time) api.Status {
	st := api.Status{ConnectionID: c.ID, Agents: []api.Agent{}, LastSeenAt: c.LastSeenAt}
	agents, newest, degraded := k.agents(views, now)
	st.Agents = agents
	switch {
	case c.Revoked():
		st.TunnelStatus, st.AuthStatus = TunnelRevoked, AuthRevoked
		st.Reason = protocol.ConnectionRevoked
		st.LastError = "connection revoked at " + c.RevokedAt.UTC().Format(time.RFC3339)
	case len(views) > 0:
		st.TunnelStatus, st.AuthStatus = TunnelConnected, AuthActive
		if degraded {
			st.TunnelStatus = TunnelDegraded
		}
		seen := newest.LastBeat()
		st.LastSeenAt = &seen
	default:
		k.offlineStatus(&st, c, f, now)
	}
	k.allowlistStatus(&st, newest, target)
	if w, ok := duplicateWarning(agents); ok && !c.Revoked() {
		st.Warnings = append(st.Warnings, w)
	}
	st.ProviderErrorCode = st.Reason.Info().ProviderErrorCode
	live := st.TunnelStatus == TunnelConnected || st.TunnelStatus == TunnelDegraded
	st.Ready = live && st.AuthStatus == AuthActive && st.Reason == protocol.ReasonUnknown &&
		(st.AllowlistStatus == "allowed" || (target == nil && st.AllowlistStatus == "configured"))
	return st
}

// agents folds the sessions into one entry per agent process (agent id
// and instance), its tunnels counted, in the order the sessions came; it also returns the session
// that reported last and whether any tunnel is degraded (a Health overdue,
// or fewer tunnels than its agent wants).
func (k *Keeper) agents(views []View, now time.Time) ([]api.Agent, *View, bool) {
	byAgent := map[string]*api.Agent{}
	var newest *View
	degraded := false
	for i := range views {
		v := &views[i]
		beat := v.LastBeat()
		if now.Sub(beat) > broker.DegradedAfter(k.cfg.HeartbeatInterval) {
			degraded = true
		}
		a := byAgent[agentKey(v.Hello)]
		if a == nil {
			a = &api.Agent{AgentID: v.Hello.AgentID, InstanceID: v.Hello.InstanceID, Hostname: v.Hello.Hostname,
				Version: v.Hello.Version, RelayNode: v.NodeID, ConnectedAt: v.ConnectedAt}
			byAgent[agentKey(v.Hello)] = a
		}
		k.addTunnel(a, v)
		if newest == nil || beat.After(newest.LastBeat()) {
			newest = v
		}
	}
	for _, v := range views {
		if a := byAgent[agentKey(v.Hello)]; a.Tunnels < v.Hello.Tunnels {
			degraded = true
		}
	}
	out := []api.Agent{}
	for _, v := range views {
		if a := byAgent[agentKey(v.Hello)]; a != nil {
			out = append(out, *a)
			delete(byAgent, agentKey(v.Hello))
		}
	}
	return out, newest, degraded
}

// addTunnel counts one session of agent a.
func (k *Keeper) addTunnel(a *api.Agent, v *View) {
	beat := v.LastBeat()
	a.Tunnels++
	a.ActiveStreams += int(v.Active)
	a.Sessions = append(a.Sessions, api.Tunnel{SessionID: v.SessionID, RelayNode: v.NodeID,
		ConnectedAt: v.ConnectedAt, LastHeartbeatAt: beat, ActiveStreams: int(v.Active), Draining: v.Draining})
	if v.ConnectedAt.Before(a.ConnectedAt) {
		a.ConnectedAt = v.ConnectedAt
	}
	if beat.After(a.LastHeartbeatAt) {
		a.LastHeartbeatAt = beat
		a.RelayNode = v.NodeID
		a.Allowlist = v.Allowlist()
		if v.Health != nil {
			a.UptimeSeconds, a.Resolver, a.Errors = v.Health.UptimeSeconds, v.Health.Resolver, v.Health.Errors
		}
	}
}

// offlineStatus fills the status of a connection with no live tunnel.
func (k *Keeper) offlineStatus(st *api.Status, c store.Connection, f store.Failure, now time.Time) {
	st.AuthStatus = AuthActive
	if k.failing(f, now) {
		st.AuthStatus = AuthFailing
		st.LastError = f.Message
	}
	e := k.explain(c, f, now)
	st.Reason = e.Reason
	st.TunnelStatus = TunnelDisconnected
	if c.FirstConnectedAt == nil {
		st.TunnelStatus = TunnelNeverConnected
	}
	if st.LastError == "" {
		st.LastError = e.Message
	}
}

// allowlistStatus fills allowlist_status from the newest reported summary,
// and with a target the reported rules' verdict on it.
func (k *Keeper) allowlistStatus(st *api.Status, newest *View, target *Target) {
	st.AllowlistStatus = "unknown"
	if newest == nil {
		return
	}
	summary := newest.Allowlist()
	st.AllowlistStatus = summary.Status
	if summary.Status == "invalid" && st.LastError == "" {
		st.LastError = "the agent refused its new allowlist and keeps the previous rules: " + summary.LastError
	}
	if target == nil {
		return
	}
	d := k.verdicts.decide(summary, target.Host, target.Port)
	st.AllowlistStatus = d.Verdict.String()
	if st.Reason == protocol.ReasonUnknown {
		st.Reason = protocol.VerdictReason(d.Verdict.String())
		if d.Verdict != allowlist.Allowed {
			st.LastError = d.Reason
		}
	}
}

// Offline explains why no tunnel of c is up: an agent failing with a bad
// token, no agent ever, or none now with the last time one was seen. When
// the book cannot be read, it cannot tell: RELAY_UNAVAILABLE.
func (k *Keeper) Offline(ctx context.Context, c store.Connection) *protocol.Error {
	// c may come from a cache of a few seconds (the proxy's credential
	// check): when its agent was first or last seen is read afresh, so
	// an agent that just left is offline, not never connected.
	fresh, err := k.store.GetConnection(ctx, c.ID)
	if err == nil {
		c = fresh
	} else if !errors.Is(err, store.ErrNotFound) {
		k.log.Warn("status: read connection", "connection", c.ID, "err", err)
		e := protocol.Errorf(protocol.RelayUnavailable, "relay store unavailable")
		e.RetryAfter = 5
		return e
	}
	f, err := k.book.Failure(ctx, c.ID)
	if err != nil {
		k.log.Warn("status: read auth failures", "connection", c.ID, "err", err)
		e := protocol.Errorf(protocol.RelayUnavailable, "relay store unavailable")
		e.RetryAfter = 5
		return e
	}
	return k.explain(c, f, time.Now())
}

// failing reports whether refused agent tokens make c's auth failing at
// now.
func (k *Keeper) failing(f store.Failure, now time.Time) bool {
	return f.Count >= FailingAfter && !f.At.IsZero() && now.Sub(f.At) < k.cfg.AuthFailureWindow
}

func (k *Keeper) explain(c store.Connection, f store.Failure, now time.Time) *protocol.Error {
	if k.failing(f, now) {
		return protocol.Errorf(protocol.AgentAuthFailed, "%s at %s", f.Message, f.At.UTC().Format(time.RFC3339))
	}
	if c.FirstConnectedAt == nil {
		return protocol.Errorf(protocol.AgentNeverConnected, "no agent has ever connected for connection %s", c.ID)
	}
	msg := "no agent tunnel is up for connection " + c.ID
	if c.LastSeenAt != nil {
		msg += "; last seen " + c.LastSeenAt.UTC().Format(time.RFC3339)
	}
	return protocol.Errorf(protocol.AgentOffline, "%s", msg)
}

// MaxCachedRules bounds the rules of the compiled rule sets the status
// keeps for judging base URLs, all sets together: some 64 summaries of
// the most rules an agent may report (broker.MaxRules).
const MaxCachedRules = 64 * 1024

// verdictCache compiles reported allowlists once per distinct rule set,
// keeping at most MaxCachedRules rules; the oldest sets make room.
// Compiling happens outside its lock, so a large set never holds up
// another status read.
type verdictCache struct {
	mu    sync.Mutex
	lists map[string]cachedList
	order []string // keys, oldest first
	rules int      // rules held, all sets together
	// compile is allowlist.CompileRules when nil; tests watch it.
	compile func(allowlist.Rules) (*allowlist.List, error)
}

type cachedList struct {
	list  *allowlist.List
	rules int
}

func (vc *verdictCache) decide(a protocol.Allowlist, host string, port int) allowlist.Decision {
	key := rulesKey(a)
	list := vc.get(key)
	if list == nil {
		compile := vc.compile
		if compile == nil {
			compile = allowlist.CompileRules
		}
		compiled, err := compile(reportedRules(a))
		if err != nil {
			return allowlist.Decision{Verdict: allowlist.Missing, Reason: "the agent's reported rules do not compile here: " + err.Error()}
		}
		vc.put(key, compiled, max(len(a.Allow)+len(a.Deny)+len(a.Blocked), 1))
		list = compiled
	}
	return list.Decide(host, port)
}

func (vc *verdictCache) get(key string) *allowlist.List {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	return vc.lists[key].list
}

// put keeps a compiled set, dropping the oldest until the rules fit; a
// set larger than the whole cache is not kept.
func (vc *verdictCache) put(key string, list *allowlist.List, rules int) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.lists == nil {
		vc.lists = make(map[string]cachedList)
	}
	if _, ok := vc.lists[key]; ok || rules > MaxCachedRules {
		return // another reader compiled it meanwhile, or it never fits
	}
	for len(vc.order) > 0 && vc.rules+rules > MaxCachedRules {
		oldest := vc.order[0]
		vc.order = vc.order[1:]
		vc.rules -= vc.lists[oldest].rules
		delete(vc.lists, oldest)
	}
	vc.lists[key] = cachedList{list: list, rules: rules}
	vc.order = append(vc.order, key)
	vc.rules += rules
}

// size is how many sets and rules the cache holds.
func (vc *verdictCache) size() (sets, rules int) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	return len(vc.lists), vc.rules
}

// rulesKey names a reported rule set by its content. The digest an agent
// reports cannot serve as the key: agents of different connections may
// report the same digest, or none, for different rules, and one would then
// be judged by the other's rules.
func rulesKey(a protocol.Allowlist) string {
	b, err := json.Marshal(struct {
		Allow, Deny []protocol.RuleSpec
		Blocked     []string
	}{a.Allow, a.Deny, a.Blocked})
	if err != nil {
		return "" // not reachable: the rules hold only strings
	}
	sum := sha256.Sum256(b)
	return string(sum[:])
}

// reportedRules is the rule set an agent reported, as the allowlist
// package takes it.
func reportedRules(a protocol.Allowlist) allowlist.Rules {
	rs := allowlist.Rules{Allow: toSpecs(a.Allow), Deny: toSpecs(a.Deny)}
	for _, b := range a.Blocked {
		rs.Blocked = append(rs.Blocked, allowlist.BlockedSpec{Addr: b})
	}
	return rs
}

func toSpecs(in []protocol.RuleSpec) []allowlist.RuleSpec {
	out := make([]allowlist.RuleSpec, len(in))
	for i, r := range in {
		out[i] = allowlist.RuleSpec{Host: r.Host, IP: r.IP, CIDR: r.CIDR, Ports: r.Ports}
	}
	return out
}
