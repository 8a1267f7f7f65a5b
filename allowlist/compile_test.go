package allowlist

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompileRejects(t *testing.T) {
	tests := map[string]struct {
		spec RuleSpec
		deny bool
		want string // the whole first line of the error
	}{
		"no target":          {RuleSpec{Ports: []string{"443"}, Line: 3}, false, "allow[0] (line 3): bad rule: set exactly one of host, ip and cidr"},
		"two targets":        {RuleSpec{Host: "a.example", IP: "10.0.0.1", Ports: []string{"443"}, Line: 4}, false, "allow[0] (line 4): bad rule: host and ip are set; set exactly one of host, ip and cidr"},
		"allow without port": {RuleSpec{Host: "a.example", Line: 5}, false, `allow[0] (line 5): ports: bad rule: allow rules must list ports, as in [443] or ["8000-8100"]`},
		"bare wildcard":      {RuleSpec{Host: "*", Ports: []string{"443"}, Line: 6}, false, `allow[0] (line 6): host "*": bad rule: a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`},
		"partial wildcard":   {RuleSpec{Host: "a*.b.example", Ports: []string{"443"}}, false, `allow[0]: host "a*.b.example": bad rule: a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`},
		"inner wildcard":     {RuleSpec{Host: "a.*.example", Ports: []string{"443"}}, false, `allow[0]: host "a.*.example": bad rule: a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`},
		"double wildcard":    {RuleSpec{Host: "*.*.example", Ports: []string{"443"}}, false, `allow[0]: host "*.*.example": bad rule: a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`},
		"wildcard no suffix": {RuleSpec{Host: "*.", Ports: []string{"443"}}, false, `allow[0]: host "*.": bad rule: the name is empty`},
		"empty label":        {RuleSpec{Host: "a..example", Ports: []string{"443"}}, false, `allow[0]: host "a..example": bad rule: the name has an empty label`},
		"long label":         {RuleSpec{Host: strings.Repeat("x", 64) + ".example", Ports: []string{"443"}}, false, `label "` + strings.Repeat("x", 64) + `" is longer than 63 bytes`},
		"long name":          {RuleSpec{Host: strings.Repeat("abcdefghi.", 26) + "example", Ports: []string{"443"}}, false, "the name is 267 bytes long; the limit is 253"},
		"underscore":         {RuleSpec{Host: "a_b.example", Ports: []string{"443"}}, false, `allow[0]: host "a_b.example": bad rule: character '_' is not allowed in a host name`},
		"ip in host":         {RuleSpec{Host: "10.0.0.1", Ports: []string{"443"}}, false, `allow[0]: host "10.0.0.1": bad rule: this is an IPv4 address or numeric form; use an ip rule with four decimal octets`},
		"ipv6 in host":       {RuleSpec{Host: "fd00::1", Ports: []string{"443"}}, false, `allow[0]: host "fd00::1": bad rule: this is an IP address; use an ip or cidr rule`},
		"host with port":     {RuleSpec{Host: "a.example:443", Ports: []string{"443"}}, false, `allow[0]: host "a.example:443": bad rule: the host must not carry a port`},
		"bad punycode":       {RuleSpec{Host: "xn--zz.example", Ports: []string{"443"}}, false, `allow[0]: host "xn--zz.example": bad rule: not a valid internationalized name`},
		"octal ip":           {RuleSpec{IP: "0177.0.0.1", Ports: []string{"443"}}, false, `allow[0]: ip "0177.0.0.1": bad rule: not an IP address`},
		"short ip":           {RuleSpec{IP: "127.1", Ports: []string{"443"}}, false, `allow[0]: ip "127.1": bad rule: not an IP address`},
		"ip with prefix":     {RuleSpec{IP: "10.0.0.0/8", Ports: []string{"443"}}, false, `allow[0]: ip "10.0.0.0/8": bad rule: this is an address block; use a cidr rule`},
		"ip zone":            {RuleSpec{IP: "fe80::1%eth0", Ports: []string{"443"}}, false, `allow[0]: ip "fe80::1%eth0": bad rule: IPv6 zone ids are not accepted`},
		"cidr host bits":     {RuleSpec{CIDR: "10.20.0.1/16", Ports: []string{"443"}, Line: 9}, false, `allow[0] (line 9): cidr "10.20.0.1/16": bad rule: host bits are set; the block is 10.20.0.0/16`},
		"cidr v6 host bits":  {RuleSpec{CIDR: "fd00::1/8"}, true, `deny[0]: cidr "fd00::1/8": bad rule: host bits are set; the block is fd00::/8`},
		"cidr no bits":       {RuleSpec{CIDR: "10.0.0.0", Ports: []string{"443"}}, false, `allow[0]: cidr "10.0.0.0": bad rule: not a CIDR block`},
		"cidr too long":      {RuleSpec{CIDR: "10.0.0.0/33", Ports: []string{"443"}}, false, `allow[0]: cidr "10.0.0.0/33": bad rule: not a CIDR block`},
		"port 0":             {RuleSpec{Host: "a.example", Ports: []string{"0"}}, false, `allow[0]: ports[0] "0": bad rule: port is outside 1-65535`},
		"port 65536":         {RuleSpec{Host: "a.example", Ports: []string{"65536"}}, false, `allow[0]: ports[0] "65536": bad rule: port is outside 1-65535`},
		"port plus":          {RuleSpec{Host: "a.example", Ports: []string{"+22"}}, false, `allow[0]: ports[0] "+22": bad rule: a port must be a number 1-65535 or a range such as 8000-8100`},
		"port leading zero":  {RuleSpec{Host: "a.example", Ports: []string{"443", "022"}}, false, `allow[0]: ports[1] "022": bad rule: a port must not have a leading zero`},
		"port reversed":      {RuleSpec{Host: "a.example", Ports: []string{"8100-8000"}}, false, `allow[0]: ports[0] "8100-8000": bad rule: range runs backwards; write 8000-8100`},
		"port letters":       {RuleSpec{Host: "a.example", Ports: []string{"a-b"}}, false, `allow[0]: ports[0] "a-b": bad rule: a port must be a number 1-65535 or a range such as 8000-8100`},
		"port space":         {RuleSpec{Host: "a.example", Ports: []string{" 443"}}, false, `allow[0]: ports[0] " 443": bad rule: a port must be a number`},
		"port open range":    {RuleSpec{Host: "a.example", Ports: []string{"8000-"}}, false, `allow[0]: ports[0] "8000-": bad rule: a port must be a number`},
		"port star":          {RuleSpec{CIDR: "10.0.0.0/8", Ports: []string{"*"}}, true, `deny[0]: ports[0] "*": bad rule: a port must be a number`},
		"port empty string":  {RuleSpec{Host: "a.example", Ports: []string{""}}, false, `allow[0]: ports[0]: bad rule: a port must be a number`},
		"port huge":          {RuleSpec{Host: "a.example", Ports: []string{"99999999999999999999"}}, false, `port is outside 1-65535`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var allow, deny []RuleSpec
			if tc.deny {
				deny = []RuleSpec{tc.spec}
			} else {
				allow = []RuleSpec{tc.spec}
			}
			l, err := Compile(allow, deny)
			require.Error(t, err)
			assert.Nil(t, l)
			assert.ErrorIs(t, err, ErrBadRule)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestCompileReportsEveryBadRule(t *testing.T) {
	_, err := Compile([]RuleSpec{
		{Host: "ok.example", Ports: []string{"443"}, Line: 2},
		{Host: "a*.example", Ports: []string{"443"}, Line: 4},
		{CIDR: "10.0.0.1/8", Ports: []string{"0"}, Line: 6},
	}, []RuleSpec{
		{IP: "1.2.3", Line: 9},
		{Host: "fine.example"},
	})
	require.Error(t, err)
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	lines := strings.Split(err.Error(), "\n")
	assert.Equal(t, []string{
		`allow[1] (line 4): host "a*.example": bad rule: a wildcard must be the whole leftmost label followed by a suffix, as in "*.corp.example"`,
		`allow[2] (line 6): cidr "10.0.0.1/8": bad rule: host bits are set; the block is 10.0.0.0/8`,
		`allow[2] (line 6): ports[0] "0": bad rule: port is outside 1-65535`,
		`deny[0] (line 9): ip "1.2.3": bad rule: not an IP address (IPv4 as four decimal octets without leading zeros, or IPv6)`,
	}, lines)
	for _, e := range joined.Unwrap() {
		assert.ErrorIs(t, e, ErrBadRule)
	}
}

func TestSpecsNormalized(t *testing.T) {
	l, err := Compile([]RuleSpec{
		{Host: "GitLab.Corp.Example.", Ports: []string{"443"}, Line: 1},
		{Host: "*.Bücher.example", Ports: []string{"8000-8100", "443", "8050-8200", "22-22"}, Line: 2},
		{IP: "FD00:0:0:0:0:0:0:1", Ports: []string{"443"}, Line: 3},
		{IP: "::ffff:10.0.0.7", Ports: []string{"8080"}, Line: 4},
		{CIDR: "::ffff:10.20.0.0/112", Ports: []string{"443"}},
		{CIDR: "2001:DB8::/32", Ports: []string{"443", "443"}},
	}, []RuleSpec{
		{CIDR: "10.20.5.0/24", Line: 10},
		{Host: "münchen.example", Ports: []string{"22"}},
	})
	require.NoError(t, err)
	allow, deny := l.Specs()
	assert.Equal(t, []RuleSpec{
		{Host: "gitlab.corp.example", Ports: []string{"443"}, Line: 1},
		{Host: "*.xn--bcher-kva.example", Ports: []string{"22", "443", "8000-8200"}, Line: 2},
		{IP: "fd00::1", Ports: []string{"443"}, Line: 3},
		{IP: "10.0.0.7", Ports: []string{"8080"}, Line: 4},
		{CIDR: "10.20.0.0/16", Ports: []string{"443"}},
		{CIDR: "2001:db8::/32", Ports: []string{"443"}},
	}, allow)
	assert.Equal(t, []RuleSpec{
		{CIDR: "10.20.5.0/24", Line: 10},
		{Host: "xn--mnchen-3ya.example", Ports: []string{"22"}},
	}, deny)
	assert.Equal(t, 8, l.Len())

	// Specs are copies: changing them does not change the list.
	allow[0].Ports[0] = "1"
	again, _ := l.Specs()
	assert.Equal(t, "443", again[0].Ports[0])

	// Specs compile back to the same list.
	back, err := Compile(l.Specs())
	require.NoError(t, err)
	assert.Equal(t, l.SHA256(), back.SHA256())
}

func TestSHA256(t *testing.T) {
	base := []RuleSpec{
		{Host: "gitlab.corp.example", Ports: []string{"443", "8443"}, Line: 1},
		{CIDR: "10.20.0.0/16", Ports: []string{"443"}, Line: 2},
	}
	respelled := []RuleSpec{
		{Host: "GITLAB.corp.example.", Ports: []string{"8443", "443"}, Line: 7},
		{CIDR: "10.20.0.0/16", Ports: []string{"443"}, Line: 9},
	}
	reordered := []RuleSpec{base[1], base[0]}
	deny := []RuleSpec{{CIDR: "10.20.5.0/24"}}

	sum := func(allow, deny []RuleSpec) string {
		t.Helper()
		l, err := Compile(allow, deny)
		require.NoError(t, err)
		return l.SHA256()
	}
	s := sum(base, deny)
	assert.Len(t, s, 64)
	assert.Equal(t, s, sum(base, deny), "stable across compiles")
	assert.Equal(t, s, sum(respelled, deny), "spelling and line numbers do not count")
	assert.NotEqual(t, s, sum(reordered, deny), "rule order counts")
	assert.NotEqual(t, s, sum(base, nil), "deny rules count")
	assert.NotEqual(t, s, sum(nil, append(append([]RuleSpec(nil), base...), deny...)), "which list a rule is in counts")
	// Known value: sha256 of the canonical text.
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sum(nil, nil))
}

func TestDenyWithoutPortsCoversAllPorts(t *testing.T) {
	l, err := Compile([]RuleSpec{{CIDR: "10.0.0.0/8", Ports: []string{"1-65535"}}},
		[]RuleSpec{{IP: "10.1.1.1"}})
	require.NoError(t, err)
	for _, port := range []int{1, 443, 65535} {
		d := l.Decide("10.1.1.1", port)
		assert.Equal(t, Blocked, d.Verdict)
		assert.Equal(t, "deny ip=10.1.1.1 ports=*", d.Rule)
	}
	assert.Equal(t, Allowed, l.Decide("10.1.1.2", 65535).Verdict)
}
