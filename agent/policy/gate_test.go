package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/allowlist"
	"github.com/postern/postern/protocol"
)

// fakeResolver answers from a map and records every name asked.
type fakeResolver struct {
	answers map[string][]string // name -> addresses; a missing name is NXDOMAIN
	aliases map[string][]string // name -> the CNAME targets followed to its addresses
	fail    map[string]error

	mu    sync.Mutex
	asked []string
}

func (r *fakeResolver) Lookup(_ context.Context, host string) ([]netip.Addr, resolve.Answer, error) {
	r.mu.Lock()
	r.asked = append(r.asked, host)
	r.mu.Unlock()
	if err := r.fail[host]; err != nil {
		return nil, resolve.Answer{Rcode: "SERVFAIL"}, err
	}
	addrs, ok := r.answers[host]
	if !ok {
		return nil, resolve.Answer{Rcode: "NXDOMAIN"}, fmt.Errorf("lookup %s: %w", host, resolve.ErrNXDomain)
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out, resolve.Answer{Server: "10.0.0.2:53", Name: host + ".", Rcode: "NOERROR", Source: resolve.SourceDNS,
		CNAMEs: r.aliases[host]}, nil
}

func (r *fakeResolver) Asked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.asked...)
}

func newGate(t *testing.T, mode string) (*Gate, *fakeResolver) {
	t.Helper()
	cfg, err := config.Parse("agent.yaml", []byte(`relay_url: ws://127.0.0.1:1
mode: `+mode+`
allow:
  - host: "*.corp.test"
    ports: [443]
  - ip: 10.0.0.7
    ports: [8080]
deny:
  - cidr: 10.99.0.0/16
  - host: secret.corp.test
`), nil)
	require.NoError(t, err)
	r := &fakeResolver{
		answers: map[string][]string{
			"git.corp.test":    {"10.1.0.1", "10.1.0.2"},
			"mixed.corp.test":  {"10.99.0.1", "127.0.0.1", "10.1.0.3"},
			"denied.corp.test": {"10.99.0.1"},
			"loop.corp.test":   {"127.0.0.1"},
			"alias.corp.test":  {"10.1.0.9"},
			"cdn.corp.test":    {"10.1.0.8"},
		},
		aliases: map[string][]string{
			"alias.corp.test": {"lb.corp.test.", "SECRET.corp.test."},
			"cdn.corp.test":   {"edge.cdn.example."},
		},
		fail: map[string]error{"broken.corp.test": fmt.Errorf("lookup: %w", resolve.ErrServFail)},
	}
	return NewGate(New(cfg, time.Now()), r), r
}

func aps(port uint16, addrs ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(netip.MustParseAddr(a), port))
	}
	return out
}

func TestDecide(t *testing.T) {
	type want struct {
		result   Result
		reason   protocol.Reason
		addrs    []netip.AddrPort
		resolved bool
		blocked  int // addresses the rules refused
		waived   int // refusals report mode let through
	}
	tests := map[string]struct {
		host            string
		port            int
		enforce, report want
	}{
		"allowed name": {host: "git.corp.test", port: 443,
			enforce: want{result: Allow, addrs: aps(443, "10.1.0.1", "10.1.0.2"), resolved: true},
			report:  want{result: Allow, addrs: aps(443, "10.1.0.1", "10.1.0.2"), resolved: true}},
		"allowed literal": {host: "10.0.0.7", port: 8080,
			enforce: want{result: Allow, addrs: aps(8080, "10.0.0.7")},
			report:  want{result: Allow, addrs: aps(8080, "10.0.0.7")}},
		"blocked addresses skipped": {host: "mixed.corp.test", port: 443,
			enforce: want{result: Allow, addrs: aps(443, "10.1.0.3"), resolved: true, blocked: 2},
			report:  want{result: Allow, addrs: aps(443, "10.1.0.3"), resolved: true, blocked: 2}},
		"every address blocked": {host: "denied.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked, resolved: true, blocked: 1},
			report:  want{result: Deny, reason: protocol.TargetBlocked, resolved: true, blocked: 1}},
		"name resolving to loopback": {host: "loop.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked, resolved: true, blocked: 1},
			report:  want{result: Deny, reason: protocol.TargetBlocked, resolved: true, blocked: 1}},
		"unlisted port, loopback address": {host: "loop.corp.test", port: 80,
			enforce: want{result: Deny, reason: protocol.AllowlistMissing},
			report:  want{result: Deny, reason: protocol.TargetBlocked, resolved: true, blocked: 1, waived: 1}},
		"alias of a denied name": {host: "alias.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked, resolved: true},
			report:  want{result: Deny, reason: protocol.TargetBlocked, resolved: true}},
		"alias of an unlisted name": {host: "cdn.corp.test", port: 443,
			enforce: want{result: Allow, addrs: aps(443, "10.1.0.8"), resolved: true},
			report:  want{result: Allow, addrs: aps(443, "10.1.0.8"), resolved: true}},
		"denied name": {host: "secret.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked},
			report:  want{result: Deny, reason: protocol.TargetBlocked}},
		"loopback literal": {host: "127.0.0.1", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked},
			report:  want{result: Deny, reason: protocol.TargetBlocked}},
		"metadata literal": {host: "169.254.169.254", port: 80,
			enforce: want{result: Deny, reason: protocol.TargetBlocked},
			report:  want{result: Deny, reason: protocol.TargetBlocked}},
		"unlisted literal": {host: "10.1.0.4", port: 443,
			enforce: want{result: Deny, reason: protocol.AllowlistMissing},
			report:  want{result: Report, reason: protocol.AllowlistMissing, addrs: aps(443, "10.1.0.4"), waived: 1}},
		"port not allowlisted": {host: "git.corp.test", port: 80,
			enforce: want{result: Deny, reason: protocol.AllowlistMissing},
			report:  want{result: Report, reason: protocol.AllowlistMissing, addrs: aps(80, "10.1.0.1", "10.1.0.2"), resolved: true, waived: 1}},
		"deny rule literal": {host: "10.99.0.5", port: 443,
			enforce: want{result: Deny, reason: protocol.TargetBlocked},
			report:  want{result: Deny, reason: protocol.TargetBlocked}},
		"malformed host": {host: "0x7f.0.0.1", port: 443,
			enforce: want{result: Deny, reason: protocol.BadTarget},
			report:  want{result: Deny, reason: protocol.BadTarget}},
		"port out of range": {host: "git.corp.test", port: 0,
			enforce: want{result: Deny, reason: protocol.BadTarget},
			report:  want{result: Deny, reason: protocol.BadTarget}},
		"nxdomain": {host: "nx.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.DNSNXDomain, resolved: true},
			report:  want{result: Deny, reason: protocol.DNSNXDomain, resolved: true}},
		"servfail": {host: "broken.corp.test", port: 443,
			enforce: want{result: Deny, reason: protocol.DNSServFail, resolved: true},
			report:  want{result: Deny, reason: protocol.DNSServFail, resolved: true}},
		"would-be denial, then nxdomain": {host: "nx.corp.test", port: 80,
			enforce: want{result: Deny, reason: protocol.AllowlistMissing},
			report:  want{result: Deny, reason: protocol.DNSNXDomain, resolved: true, waived: 1}},
	}
	for name, tc := range tests {
		for _, mode := range []string{"enforce", "report"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				w := tc.enforce
				if mode == "report" {
					w = tc.report
				}
				g, r := newGate(t, mode)
				d := g.Decide(context.Background(), tc.host, tc.port)
				assert.Equal(t, w.result, d.Result, "%+v", d)
				assert.Equal(t, w.reason, d.Reason, "%+v", d)
				assert.Equal(t, w.addrs, d.Addrs)
				assert.Equal(t, w.resolved, d.Resolved)
				assert.Len(t, d.Blocked, w.blocked)
				assert.Len(t, d.Waived, w.waived)
				assert.Equal(t, mode, d.Mode.String())
				assert.Equal(t, d.Result == Allow || d.Result == Report, d.MayDial())
				if d.Result != Allow {
					assert.NotEmpty(t, d.Message, "a refusal, or what enforce would refuse, is explained")
				}
				if !w.resolved {
					assert.Empty(t, r.Asked(), "no lookup")
				} else {
					assert.Len(t, r.Asked(), 1, "exactly one lookup")
				}
			})
		}
	}
}

func TestDecideNamesTheRule(t *testing.T) {
	g, _ := newGate(t, "enforce")
	ctx := context.Background()
	assert.Equal(t, "allow host=*.corp.test ports=443", g.Decide(ctx, "git.corp.test", 443).Rule)
	assert.Equal(t, "allow host=*.corp.test ports=443", g.Decide(ctx, "denied.corp.test", 443).Rule,
		"an address refusal keeps the rule that allowed the name")
	d := g.Decide(ctx, "10.99.0.5", 443)
	assert.Contains(t, d.Rule, "deny cidr=10.99.0.0/16")
	assert.Equal(t, protocol.Result{Reason: protocol.TargetBlocked, Message: d.Message, Rule: d.Rule}, d.Refusal())
	d = g.Decide(ctx, "mixed.corp.test", 443)
	require.Len(t, d.Blocked, 2)
	assert.Equal(t, netip.MustParseAddr("10.99.0.1"), d.Blocked[0].Addr)
	assert.Contains(t, d.Blocked[0].Rule, "deny cidr=10.99.0.0/16")
	assert.Contains(t, d.Blocked[1].Why, "loopback")
	assert.Equal(t, "10.0.0.2:53", d.Answer.Server)
	assert.Len(t, d.Found, 3, "Found is every address the resolver returned")

	d = g.Decide(ctx, "alias.corp.test", 443)
	assert.Equal(t, "deny host=secret.corp.test ports=*", d.Rule, "the deny rule the alias met decides")
	assert.Equal(t, "alias.corp.test leads by CNAME to secret.corp.test, which matches deny host=secret.corp.test ports=*", d.Message)
	assert.Equal(t, protocol.Result{Reason: protocol.TargetBlocked, Message: d.Message, Rule: d.Rule}, d.Refusal())
}

// A live check in report mode shows what enforce mode would do, and a
// target the rules refuse is never looked up.
func TestDecideEnforceInReportMode(t *testing.T) {
	g, r := newGate(t, "report")
	ctx := context.Background()
	d := g.DecideEnforce(ctx, "git.corp.test", 80)
	assert.Equal(t, Deny, d.Result)
	assert.Equal(t, protocol.AllowlistMissing, d.Reason)
	assert.Equal(t, config.ModeReport, d.Mode, "the decision says the mode in force")
	assert.Empty(t, d.Waived)
	assert.Empty(t, r.Asked())

	d = g.DecideEnforce(ctx, "mixed.corp.test", 443)
	assert.Equal(t, Allow, d.Result)
	assert.Equal(t, aps(443, "10.1.0.3"), d.Addrs)
	assert.Len(t, d.Blocked, 2)
}

func TestResolveSkipsTheNameJudgement(t *testing.T) {
	g, r := newGate(t, "enforce")
	d := g.Resolve(context.Background(), "git.corp.test", 80)
	assert.Equal(t, Allow, d.Result, "Resolve checks addresses only; Judge judges the name")
	assert.Equal(t, aps(80, "10.1.0.1", "10.1.0.2"), d.Addrs)
	assert.Equal(t, []string{"git.corp.test"}, r.Asked())
	assert.Equal(t, Deny, g.Policy().Judge("git.corp.test", 80).Result)
}

func TestSetSwapsAndWakes(t *testing.T) {
	g, _ := newGate(t, "enforce")
	changed := g.Changed()
	cfg, err := config.Parse("agent.yaml", []byte("relay_url: ws://127.0.0.1:1\nallow:\n  - ip: 10.0.0.9\n    ports: [22]\n"), nil)
	require.NoError(t, err)
	next := New(cfg, time.Now())
	g.Set(next)
	select {
	case <-changed:
	default:
		t.Fatal("Set wakes the watchers")
	}
	assert.Same(t, next, g.Policy())
	assert.Equal(t, Allow, g.Decide(context.Background(), "10.0.0.9", 22).Result)
	assert.NotEqual(t, changed, g.Changed(), "a new channel for the next change")

	refused := next.Refused(errors.New("line 3: bad rule"))
	assert.Equal(t, "invalid", refused.Summary.Status)
	assert.Equal(t, "line 3: bad rule", refused.Summary.LastError)
	assert.Same(t, next.List, refused.List, "the rules stay in force")
	assert.Equal(t, "configured", next.Summary.Status, "the policy in force is not changed in place")
}

func TestDialTriesCheckedAddressesInOrder(t *testing.T) {
	var dialled []string
	dial := func(_ context.Context, _, addr string) (net.Conn, error) {
		dialled = append(dialled, addr)
		if addr == "10.1.0.1:443" {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
		}
		c, _ := net.Pipe()
		return c, nil
	}
	g, _ := newGate(t, "enforce")
	ctx := context.Background()
	conn, res := g.Decide(ctx, "git.corp.test", 443).Dial(ctx, dial)
	require.NotNil(t, conn)
	_ = conn.Close()
	assert.True(t, res.OK)
	assert.Equal(t, "10.1.0.2:443", res.Addr)
	assert.Equal(t, []string{"10.1.0.1:443", "10.1.0.2:443"}, dialled)

	dialled = nil
	conn, res = g.Decide(ctx, "denied.corp.test", 443).Dial(ctx, dial)
	assert.Nil(t, conn)
	assert.Equal(t, protocol.TargetBlocked, res.Reason)
	assert.Empty(t, dialled, "a refused decision dials nothing")
}

// The reason of every allowlist verdict comes from protocol.VerdictReason,
// keyed by the verdict's stable word.
func TestVerdictWordsAreProtocolVocabulary(t *testing.T) {
	tests := map[allowlist.Verdict]protocol.Reason{
		allowlist.Missing:        protocol.AllowlistMissing,
		allowlist.Blocked:        protocol.TargetBlocked,
		allowlist.BadTarget:      protocol.BadTarget,
		allowlist.Allowed:        protocol.ReasonUnknown,
		allowlist.VerdictUnknown: protocol.ReasonUnknown,
	}
	for v, want := range tests {
		assert.Equal(t, want, protocol.VerdictReason(v.String()), "verdict %s", v)
	}
}

func TestResultNames(t *testing.T) {
	assert.Equal(t, "unknown", Result(0).String())
	assert.Equal(t, "allow", Allow.String())
	assert.Equal(t, "report", Report.String())
	assert.Equal(t, "deny", Deny.String())
	assert.Equal(t, "result(9)", Result(9).String())
}

// gateFor builds a gate from config YAML (relay_url is added) over r.
func gateFor(t *testing.T, yaml string, r *fakeResolver) *Gate {
	t.Helper()
	cfg, err := config.Parse("agent.yaml", []byte("relay_url: ws://127.0.0.1:1\n"+yaml), nil)
	require.NoError(t, err)
	return NewGate(New(cfg, time.Now()), r)
}

// With no allow rule at all, report mode lets through every target whose
// addresses pass the checks, and still refuses the rest.
func TestReportModeWithoutAllowRules(t *testing.T) {
	r := &fakeResolver{answers: map[string][]string{
		"git.corp.test":  {"10.1.0.1"},
		"loop.corp.test": {"127.0.0.1", "10.1.0.2"},
		"meta.corp.test": {"169.254.169.254"},
	}}
	g := gateFor(t, "mode: report\ndeny:\n  - cidr: 10.99.0.0/16\n", r)
	ctx := context.Background()
	assert.Equal(t, "empty", g.Policy().Summary.Status)

	d := g.Decide(ctx, "git.corp.test", 443)
	assert.Equal(t, Report, d.Result)
	assert.Equal(t, protocol.AllowlistMissing, d.Reason)
	assert.Equal(t, aps(443, "10.1.0.1"), d.Addrs)
	assert.Len(t, d.Waived, 1, "one would-be refusal, not one per address")

	d = g.Decide(ctx, "loop.corp.test", 443)
	assert.Equal(t, Report, d.Result)
	assert.Equal(t, aps(443, "10.1.0.2"), d.Addrs, "the loopback address is skipped")
	require.Len(t, d.Blocked, 1)
	assert.Equal(t, protocol.TargetBlocked, d.Blocked[0].Reason)

	for _, host := range []string{"meta.corp.test", "127.0.0.1", "[::1]", "169.254.169.254", "10.99.0.1", "100.100.100.200"} {
		d = g.Decide(ctx, host, 443)
		assert.Equal(t, Deny, d.Result, host)
		assert.Equal(t, protocol.TargetBlocked, d.Reason, host)
		assert.Empty(t, d.Addrs, host)
	}
	d = g.Decide(ctx, "10.1.0.3", 443)
	assert.Equal(t, Report, d.Result, "a literal that passes every check")
	assert.Equal(t, aps(443, "10.1.0.3"), d.Addrs)
}

// The config's blocked list joins the always-blocked set: refused in both
// modes, on literals and on resolved addresses, unless an allow rule names
// the exact address.
func TestBlockedListFromConfig(t *testing.T) {
	r := &fakeResolver{answers: map[string][]string{
		"vault.corp.test": {"10.9.0.5"},
		"jump.corp.test":  {"10.9.9.9"},
		"git.corp.test":   {"10.1.0.1", "10.9.0.6"},
	}}
	rules := `allow:
  - host: "*.corp.test"
    ports: [443]
  - cidr: 10.0.0.0/8
    ports: [443]
  - ip: 10.9.9.9
    ports: [443]
blocked:
  - 10.9.0.0/16
  - fd00:bad::/32
`
	for _, mode := range []string{"enforce", "report"} {
		t.Run(mode, func(t *testing.T) {
			g := gateFor(t, "mode: "+mode+"\n"+rules, r)
			ctx := context.Background()
			assert.Equal(t, []string{"10.9.0.0/16", "fd00:bad::/32"}, g.Policy().Blocked)
			assert.Equal(t, []string{"10.9.0.0/16", "fd00:bad::/32"}, g.Policy().Summary.Blocked, "the relay is told too")
			for _, host := range []string{"10.9.0.5", "[::ffff:10.9.0.5]", "[fd00:bad::1]", "vault.corp.test"} {
				d := g.Decide(ctx, host, 443)
				assert.Equal(t, Deny, d.Result, host)
				assert.Equal(t, protocol.TargetBlocked, d.Reason, host)
				assert.Contains(t, d.Message, "blocked list", host)
			}
			d := g.Decide(ctx, "10.9.0.5", 443)
			assert.Equal(t, "blocked cidr=10.9.0.0/16", d.Rule)

			d = g.Decide(ctx, "jump.corp.test", 443)
			assert.Equal(t, Allow, d.Result, "an exact ip rule lifts the entry: %s", d.Message)
			assert.Equal(t, aps(443, "10.9.9.9"), d.Addrs)

			d = g.Decide(ctx, "git.corp.test", 443)
			assert.Equal(t, Allow, d.Result)
			assert.Equal(t, aps(443, "10.1.0.1"), d.Addrs, "the blocked address is skipped")
		})
	}
}
