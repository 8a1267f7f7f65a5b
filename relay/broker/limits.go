package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/reply"
)

// What an agent may declare in Hello and report in Health. A frame may be
// as large as protocol.MaxControlFrame; these bounds keep what the relay
// decodes, holds per session, shares with other nodes and shows in status
// far below that, whatever the agent sends. Legitimate agents stay well
// inside them: an allowlist of a thousand rules is already unusual.
const (
	// MaxReportBody bounds the body of a Hello or Health frame: a summary
	// within the bounds below needs a third of it. A larger one is
	// refused without being held; other control frames, which the relay
	// ignores, are skipped unread.
	MaxReportBody  = 1 << 20
	maxAgentIDLen  = 128
	maxHostnameLen = 255
	maxVersionLen  = 64
	// MaxHelloTunnels bounds the tunnels a Hello may say its agent wants.
	MaxHelloTunnels = 64
	// MaxRules bounds the allow and deny rules and blocked entries of one
	// allowlist summary together.
	MaxRules = protocol.MaxSummaryRules
	// MaxPorts bounds the port entries of one summary's rules together.
	MaxPorts = protocol.MaxSummaryPorts
	// maxRuleHostLen is a DNS name's most; IPs and prefixes are shorter.
	maxRuleHostLen = 255
	maxRuleAddrLen = 64
	maxPortLen     = len("65535-65535")
	// MaxErrorKinds bounds the reason codes in a Health's errors.
	MaxErrorKinds = 64
	// MaxResolverServers bounds the DNS servers of a Health that are kept.
	MaxResolverServers = 16
	maxServerLen       = 128
	// MaxText bounds the free text an agent reports (an allowlist's or a
	// resolver's last_error): longer text is cut, not refused, so that an
	// agent whose new allowlist failed with many errors still connects
	// and says so.
	MaxText = 1024
	// maxFrameTokens bounds the JSON tokens of one Hello or Health,
	// counted before anything is decoded: the most a summary within the
	// bounds above needs is some 10 tokens a rule plus one a port, so no
	// frame can make the relay allocate a structure for each of millions
	// of tiny array elements.
	maxFrameTokens = 16*MaxRules + 2*MaxPorts + 1024
)

// Health pacing: each session's control frames draw on a token bucket that
// holds healthBurst frames and refills healthPerHeartbeat times per
// heartbeat period. An agent sends one Health a period and one more after
// each allowlist reload, so a working agent never empties it; a flood does,
// and ends its session.
const (
	healthBurst        = 20
	healthPerHeartbeat = 4
)

// GoAway reasons of a session the relay ends for what its agent sent.
// GoAway's reason is a short token (spec section 6.4), not a reason code.
const (
	goAwayProtocolError = "protocol_error"
	goAwayRateLimited   = "rate_limited"
)

// ErrAgentLimit marks a Hello or Health outside the bounds above; the
// session ends with a GoAway that says which field.
var ErrAgentLimit = errors.New("agent broke a relay limit")

func limitErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrAgentLimit, fmt.Sprintf(format, args...))
}

// reportLimit is the body limit of the control frames the relay reads:
// Hello and Health up to MaxReportBody; any other is skipped.
func reportLimit(t protocol.FrameType) int {
	if t == protocol.FrameHello || t == protocol.FrameHealth {
		return MaxReportBody
	}
	return 0
}

// decodeControl decodes a Hello or Health body into v after counting its
// JSON tokens, so that no frame costs more to decode than its bounds allow.
func decodeControl(f protocol.Frame, want protocol.FrameType, v any) error {
	if f.Type != want {
		return fmt.Errorf("%w: got %s, want %s", protocol.ErrFrameType, f.Type, want)
	}
	if err := countTokens(f.Body, maxFrameTokens); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAgentLimit, want, err)
	}
	return f.Decode(want, v)
}

// countTokens fails when body holds more than most JSON tokens. A body
// that is not JSON passes: decoding it says what is wrong.
func countTokens(body []byte, most int) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers stay strings: nothing is parsed twice
	for n := 0; n <= most; n++ {
		if _, err := dec.Token(); err != nil {
			return nil // the end, or not JSON
		}
	}
	return fmt.Errorf("more than %d JSON tokens", most)
}

// validateHello checks a Hello against its bounds.
func validateHello(h *protocol.Hello) error {
	switch {
	case h.AgentID == "" || len(h.AgentID) > maxAgentIDLen:
		return limitErr("hello agent_id empty or longer than %d", maxAgentIDLen)
	case len(h.InstanceID) > maxAgentIDLen:
		return limitErr("hello instance_id longer than %d", maxAgentIDLen)
	case len(h.Hostname) > maxHostnameLen:
		return limitErr("hello hostname longer than %d", maxHostnameLen)
	case len(h.Version) > maxVersionLen:
		return limitErr("hello version longer than %d", maxVersionLen)
	case h.Tunnels < 0 || h.Tunnels > MaxHelloTunnels:
		return limitErr("hello tunnels %d: want 0 to %d", h.Tunnels, MaxHelloTunnels)
	}
	return validateAllowlist("hello", &h.Allowlist)
}

// Enums of the allowlist summary and the resolver's health.
var (
	allowlistStatuses = []string{"configured", "empty", "invalid"}
	allowlistModes    = []string{"enforce", "report"}
	resolverStatuses  = []string{"ok", "failing"}
	sha256Hex         = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reasonCode        = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)
)

// validateAllowlist checks a reported summary and cuts its free text.
func validateAllowlist(frame string, a *protocol.Allowlist) error {
	switch {
	case !slices.Contains(allowlistStatuses, a.Status):
		return limitErr("%s allowlist.status %q: want configured, empty or invalid", frame, clip(a.Status, 32))
	case !slices.Contains(allowlistModes, a.Mode):
		return limitErr("%s allowlist.mode %q: want enforce or report", frame, clip(a.Mode, 32))
	case a.SHA256 != "" && !sha256Hex.MatchString(a.SHA256):
		return limitErr("%s allowlist.sha256: want 64 lower-case hex digits", frame)
	case a.Count < 0 || a.Count > MaxRules:
		return limitErr("%s allowlist.count %d: want 0 to %d", frame, a.Count, MaxRules)
	case len(a.Allow)+len(a.Deny)+len(a.Blocked) > MaxRules:
		return limitErr("%s allowlist: %d rules, more than %d (allow, deny and blocked together)", frame, len(a.Allow)+len(a.Deny)+len(a.Blocked), MaxRules)
	}
	for i, b := range a.Blocked {
		if b == "" || len(b) > maxRuleAddrLen {
			return limitErr("%s allowlist blocked entry %d: want an ip or cidr of at most %d bytes", frame, i+1, maxRuleAddrLen)
		}
	}
	ports := 0
	for i, r := range slices.Concat(a.Allow, a.Deny) {
		if err := validateRule(r); err != nil {
			return limitErr("%s allowlist rule %d: %v", frame, i+1, err)
		}
		ports += len(r.Ports)
	}
	if ports > MaxPorts {
		return limitErr("%s allowlist: %d port entries, more than %d", frame, ports, MaxPorts)
	}
	a.LastError = clip(a.LastError, MaxText)
	return nil
}

func validateRule(r protocol.RuleSpec) error {
	switch {
	case len(r.Host) > maxRuleHostLen:
		return fmt.Errorf("host longer than %d", maxRuleHostLen)
	case len(r.IP) > maxRuleAddrLen || len(r.CIDR) > maxRuleAddrLen:
		return fmt.Errorf("ip or cidr longer than %d", maxRuleAddrLen)
	}
	for _, p := range r.Ports {
		if p == "" || len(p) > maxPortLen {
			return fmt.Errorf("port %q: want a port or a lo-hi range", clip(p, 16))
		}
	}
	return nil
}

// validateHealth checks a Health against its bounds and cuts its free text.
func validateHealth(h *protocol.Health) error {
	switch {
	case len(h.Version) > maxVersionLen:
		return limitErr("health version longer than %d", maxVersionLen)
	case h.TunnelsUp < 0 || h.ActiveStreams < 0 || h.UptimeSeconds < 0:
		return limitErr("health counters must not be negative")
	case len(h.Errors) > MaxErrorKinds:
		return limitErr("health errors: %d reasons, more than %d", len(h.Errors), MaxErrorKinds)
	}
	for r, n := range h.Errors {
		if !reasonCode.MatchString(string(r)) || n < 0 {
			return limitErr("health errors: %q is not a reason code with a count", clip(string(r), 32))
		}
	}
	if err := validateResolver(h.Resolver); err != nil {
		return err
	}
	return validateAllowlist("health", &h.Allowlist)
}

func validateResolver(r *protocol.ResolverHealth) error {
	if r == nil {
		return nil
	}
	if !slices.Contains(resolverStatuses, r.Status) {
		return limitErr("health resolver.status %q: want ok or failing", clip(r.Status, 32))
	}
	// The servers are for operators' eyes, and an agent's configuration
	// may list many: the first ones are kept, not refused.
	r.Servers = r.Servers[:min(len(r.Servers), MaxResolverServers)]
	for i, s := range r.Servers {
		r.Servers[i] = clip(s, maxServerLen)
	}
	r.LastError = clip(r.LastError, MaxText)
	return nil
}

// clip is reply.Clip: what an agent says is cut before it is kept.
func clip(s string, n int) string { return reply.Clip(s, n) }

// pacer is a session's token bucket of control frames.
type pacer struct {
	tokens float64
	at     time.Time
	per    time.Duration // one token refills in per
}

func newPacer(heartbeat time.Duration, now time.Time) *pacer {
	return &pacer{tokens: healthBurst, at: now, per: heartbeat / healthPerHeartbeat}
}

// take spends one token; false means the bucket was empty.
func (p *pacer) take(now time.Time) bool {
	if p.per > 0 {
		p.tokens = min(healthBurst, p.tokens+float64(now.Sub(p.at))/float64(p.per))
	}
	p.at = now
	if p.tokens < 1 {
		return false
	}
	p.tokens--
	return true
}

// shareRules makes next use prev's rule lists when they are equal, so that
// a session holds one copy of an allowlist the agent reports again and
// again.
func shareRules(prev protocol.Allowlist, next *protocol.Allowlist) {
	if rulesEqual(prev.Allow, next.Allow) {
		next.Allow = prev.Allow
	}
	if rulesEqual(prev.Deny, next.Deny) {
		next.Deny = prev.Deny
	}
}

func rulesEqual(a, b []protocol.RuleSpec) bool {
	return slices.EqualFunc(a, b, func(x, y protocol.RuleSpec) bool {
		return x.Host == y.Host && x.IP == y.IP && x.CIDR == y.CIDR && slices.Equal(x.Ports, y.Ports)
	})
}
