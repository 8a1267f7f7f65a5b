package allowlist

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// customerRules has broad allow rules with the customer's own blocked list
// carved out of them.
func customerRules(t testing.TB) *List {
	t.Helper()
	l, err := CompileRules(Rules{
		Allow: []RuleSpec{
			{CIDR: "10.0.0.0/8", Ports: []string{"443"}},
			{IP: "10.9.9.9", Ports: []string{"443"}},
			{CIDR: "0.0.0.0/0", Ports: []string{"7777"}},
			{CIDR: "::/0", Ports: []string{"443", "7777"}},
			{Host: "*.corp.example", Ports: []string{"443"}},
		},
		Deny: []RuleSpec{{IP: "10.9.9.8"}},
		Blocked: []BlockedSpec{
			{Addr: "10.9.0.0/16", Line: 20},
			{Addr: "192.0.2.7", Line: 21},
			{Addr: "fd00:bad::/32", Line: 22},
			{Addr: "::ffff:10.8.0.0/112", Line: 23},
		},
	})
	require.NoError(t, err)
	return l
}

func TestCustomerBlockedList(t *testing.T) {
	l := customerRules(t)
	tests := map[string]struct {
		host   string
		port   int
		want   Verdict
		rule   string
		reason string
	}{
		"in a blocked block": {"10.9.1.1", 443, Blocked, "blocked cidr=10.9.0.0/16",
			"10.9.1.1 is in 10.9.0.0/16, on this agent's blocked list and no allow rule names it"},
		"blocked on every port": {"10.9.1.1", 7777, Blocked, "blocked cidr=10.9.0.0/16", ""},
		"outside the block":     {"10.10.0.1", 443, Allowed, "allow cidr=10.0.0.0/8 ports=443", ""},
		"exact ip rule lifts it": {"10.9.9.9", 443, Allowed, "allow ip=10.9.9.9 ports=443",
			"10.9.9.9 is in 10.9.0.0/16, on this agent's blocked list, allowed because allow ip=10.9.9.9 ports=443 names it exactly"},
		"exact ip rule on its port only": {"10.9.9.9", 7777, Blocked, "blocked cidr=10.9.0.0/16",
			"10.9.9.9 is in 10.9.0.0/16, on this agent's blocked list and allow ip=10.9.9.9 ports=443 names it but not port 7777"},
		"deny beats the lift": {"10.9.9.8", 443, Blocked, "deny ip=10.9.9.8 ports=*", ""},
		"blocked ip": {"192.0.2.7", 7777, Blocked, "blocked ip=192.0.2.7",
			"192.0.2.7 is on this agent's blocked list and no allow rule names it"},
		"next to the blocked ip": {"192.0.2.8", 7777, Allowed, "allow cidr=0.0.0.0/0 ports=7777", ""},
		"ipv6 block":             {"[fd00:bad::1]", 443, Blocked, "blocked cidr=fd00:bad::/32", ""},
		"mapped block is ipv4":   {"10.8.1.1", 443, Blocked, "blocked cidr=10.8.0.0/16", ""},
		"ipv4-mapped target": {"[::ffff:10.9.1.1]", 443, Blocked, "blocked cidr=10.9.0.0/16",
			"::ffff:10.9.1.1 carries 10.9.1.1 (IPv4-mapped), which is in 10.9.0.0/16, on this agent's blocked list and no allow rule names it"},
		"nat64 target":                   {"[64:ff9b::a09:101]", 443, Blocked, "blocked cidr=10.9.0.0/16", ""},
		"6to4 target":                    {"[2002:a09:101::1]", 443, Blocked, "blocked cidr=10.9.0.0/16", ""},
		"translated target":              {"[::ffff:0:a09:101]", 443, Blocked, "blocked cidr=10.9.0.0/16", ""},
		"built-in set still applies":     {"169.254.169.254", 7777, Blocked, "always-blocked link-local", ""},
		"names are judged by host rules": {"jira.corp.example", 443, Allowed, "allow host=*.corp.example ports=443", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := l.Decide(tc.host, tc.port)
			assert.Equal(t, tc.want, d.Verdict, "reason: %s", d.Reason)
			assert.Equal(t, tc.rule, d.Rule)
			if tc.reason != "" {
				assert.Equal(t, tc.reason, d.Reason)
			}
			tg, err := NormalizeHost(tc.host)
			require.NoError(t, err)
			if tg.IsAddr() && tc.want == Blocked {
				assert.Equal(t, Blocked, l.CheckAddr(tg.Addr, tc.port).Verdict, "a resolved address is refused alike")
			}
		})
	}
	assert.Equal(t, []BlockedSpec{
		{Addr: "10.9.0.0/16", Line: 20}, {Addr: "192.0.2.7", Line: 21},
		{Addr: "fd00:bad::/32", Line: 22}, {Addr: "10.8.0.0/16", Line: 23},
	}, l.Blocked(), "normalized, in order, lines kept")
	assert.Equal(t, 6, l.Len(), "Len counts allow and deny rules")
	assert.Nil(t, testRules(t).Blocked())
	assert.Nil(t, (*List)(nil).Blocked())
}

func TestCustomerBlockedListInTheHash(t *testing.T) {
	allow := []RuleSpec{{CIDR: "10.0.0.0/8", Ports: []string{"443"}}}
	sum := func(blocked ...BlockedSpec) string {
		t.Helper()
		l, err := CompileRules(Rules{Allow: allow, Blocked: blocked})
		require.NoError(t, err)
		return l.SHA256()
	}
	plain, err := Compile(allow, nil)
	require.NoError(t, err)
	assert.Equal(t, plain.SHA256(), sum(), "no blocked list, the hash of allow and deny alone")
	with := sum(BlockedSpec{Addr: "10.9.0.0/16"})
	assert.NotEqual(t, plain.SHA256(), with, "the blocked list counts")
	assert.Equal(t, with, sum(BlockedSpec{Addr: "::ffff:10.9.0.0/112", Line: 4}), "spelling and lines do not")
	assert.NotEqual(t, with, sum(BlockedSpec{Addr: "10.9.0.0/16"}, BlockedSpec{Addr: "192.0.2.7"}))
}

func TestCustomerBlockedListRejects(t *testing.T) {
	tests := map[string]struct {
		spec BlockedSpec
		want string
	}{
		"host name":     {BlockedSpec{Addr: "jira.corp.example", Line: 7}, `blocked[0] (line 7): "jira.corp.example": bad rule: not an IP address or CIDR block`},
		"empty":         {BlockedSpec{Addr: ""}, `blocked[0]: "": bad rule: empty entry; give an IP address or a CIDR block such as 10.9.0.0/16`},
		"host bits":     {BlockedSpec{Addr: "10.9.1.0/16", Line: 3}, `blocked[0] (line 3): "10.9.1.0/16": bad rule: host bits are set; the block is 10.9.0.0/16`},
		"octal":         {BlockedSpec{Addr: "010.0.0.1"}, `blocked[0]: "010.0.0.1": bad rule: not an IP address or CIDR block`},
		"zone":          {BlockedSpec{Addr: "fe80::1%eth0"}, `blocked[0]: "fe80::1%eth0": bad rule: IPv6 zone ids are not accepted`},
		"prefix length": {BlockedSpec{Addr: "10.0.0.0/33"}, `blocked[0]: "10.0.0.0/33": bad rule: not a CIDR block`},
		"with a port":   {BlockedSpec{Addr: "10.0.0.1:443"}, `blocked[0]: "10.0.0.1:443": bad rule: not an IP address or CIDR block`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l, err := CompileRules(Rules{Blocked: []BlockedSpec{tc.spec}})
			require.Error(t, err)
			assert.Nil(t, l)
			assert.ErrorIs(t, err, ErrBadRule)
			assert.True(t, strings.HasPrefix(err.Error(), tc.want), "%q", err.Error())
		})
	}
	_, err := CompileRules(Rules{
		Allow:   []RuleSpec{{Host: "a.example"}},
		Blocked: []BlockedSpec{{Addr: "10.0.0.0/8"}, {Addr: "x"}, {Addr: "10.0.0.1/8"}},
	})
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3, "every problem at once: %s", err)
	assert.True(t, strings.HasPrefix(lines[0], "allow[0]: ports"))
	assert.True(t, strings.HasPrefix(lines[1], `blocked[1]: "x"`))
	assert.True(t, strings.HasPrefix(lines[2], `blocked[2]: "10.0.0.1/8"`))
}

func TestCheckName(t *testing.T) {
	l := testRules(t)
	tests := map[string]struct {
		name string
		port int
		want Verdict
		rule string
	}{
		"denied exact name":        {"secret.corp.example.", 443, Blocked, "deny host=secret.corp.example ports=*"},
		"denied name, upper case":  {"SECRET.Corp.Example.", 8000, Blocked, "deny host=secret.corp.example ports=*"},
		"denied by wildcard":       {"db.internal.corp.example.", 443, Blocked, "deny host=*.internal.corp.example ports=443"},
		"wildcard on another port": {"db.internal.corp.example.", 8000, Allowed, ""},
		"not denied":               {"cdn.provider.example.", 443, Allowed, ""},
		"allow rules do not count": {"github.com.", 443, Allowed, ""},
		"without trailing dot":     {"secret.corp.example", 443, Blocked, "deny host=secret.corp.example ports=*"},
		"bad port":                 {"secret.corp.example.", 0, BadTarget, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := l.CheckName(tc.name, tc.port)
			assert.Equal(t, tc.want, d.Verdict, "reason: %s", d.Reason)
			assert.Equal(t, tc.rule, d.Rule)
			assert.NotEmpty(t, d.Reason)
		})
	}
	assert.Equal(t, Allowed, (*List)(nil).CheckName("secret.corp.example.", 443).Verdict)
}

func FuzzCompileBlocked(f *testing.F) {
	for _, s := range []string{"10.9.0.0/16", "192.0.2.7", "fd00::/8", "::ffff:10.0.0.0/104", "10.0.0.1/8",
		"", "x", "fe80::1%eth0", "010.0.0.1", "1.2.3.4/33", "::/0", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry string) {
		l, err := CompileRules(Rules{Blocked: []BlockedSpec{{Addr: entry, Line: 3}}})
		if err != nil {
			require.ErrorIs(t, err, ErrBadRule)
			require.True(t, strings.HasPrefix(err.Error(), "blocked[0] (line 3): "), "%q names the entry", err)
			return
		}
		got := l.Blocked()
		require.Len(t, got, 1)
		back, err := CompileRules(Rules{Blocked: got})
		require.NoError(t, err, "the normalized entry compiles")
		require.Equal(t, got, back.Blocked(), "normalization is idempotent")
		require.Equal(t, l.SHA256(), back.SHA256())
		// The entry's own address is blocked on every port.
		var addr netip.Addr
		if p, err := netip.ParsePrefix(got[0].Addr); err == nil {
			addr = p.Addr()
		} else {
			addr = netip.MustParseAddr(got[0].Addr)
		}
		require.Equal(t, Blocked, l.CheckAddr(addr, 1).Verdict)
	})
}
