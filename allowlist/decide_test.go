package allowlist

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testRules is the rule set the target tables run against.
func testRules(t testing.TB) *List {
	t.Helper()
	l, err := Compile([]RuleSpec{
		{Host: "gitlab.corp.example", Ports: []string{"443"}},
		{Host: "*.corp.example", Ports: []string{"443", "8000-8100"}},
		{Host: "xn--bcher-kva.example", Ports: []string{"443"}},
		{CIDR: "10.20.0.0/16", Ports: []string{"443", "8000-8100"}},
		{IP: "10.0.0.7", Ports: []string{"8080"}},
		{IP: "127.0.0.1", Ports: []string{"9000"}},
		{CIDR: "192.168.0.0/16", Ports: []string{"443"}},
		{CIDR: "fd00::/8", Ports: []string{"443"}},
		{Host: "münchen.example", Ports: []string{"443"}},
		{CIDR: "0.0.0.0/0", Ports: []string{"7777"}},
		{CIDR: "::/0", Ports: []string{"7777"}},
		{IP: "172.16.0.1", Ports: []string{"22"}},
		{CIDR: "2001:db8::/32", Ports: []string{"443"}},
		{CIDR: "169.254.10.10/32", Ports: []string{"80"}},
	}, []RuleSpec{
		{CIDR: "10.20.5.0/24"},
		{Host: "secret.corp.example"},
		{Host: "*.internal.corp.example", Ports: []string{"443"}},
		{IP: "8.8.4.4", Ports: []string{"7777"}},
	})
	require.NoError(t, err)
	return l
}

func TestDecide(t *testing.T) {
	l := testRules(t)
	long := strings.Repeat("a", 63)
	tests := map[string]struct {
		host string
		port int
		want Verdict
	}{
		// Names.
		"exact host":                   {"gitlab.corp.example", 443, Allowed},
		"exact host other port":        {"gitlab.corp.example", 22, Missing},
		"upper case":                   {"GitLab.CORP.example", 443, Allowed},
		"trailing dot":                 {"gitlab.corp.example.", 443, Allowed},
		"two trailing dots":            {"gitlab.corp.example..", 443, BadTarget},
		"leading dot":                  {".gitlab.corp.example", 443, BadTarget},
		"empty label":                  {"gitlab..corp.example", 443, BadTarget},
		"wildcard child":               {"api.corp.example", 8050, Allowed},
		"wildcard grandchild":          {"a.b.corp.example", 443, Allowed},
		"wildcard apex":                {"corp.example", 443, Missing},
		"wildcard port outside range":  {"api.corp.example", 8101, Missing},
		"suffix without dot":           {"evilcorp.example", 443, Missing},
		"rule name as prefix":          {"corp.example.evil.test", 443, Missing},
		"deny exact host":              {"secret.corp.example", 443, Blocked},
		"deny exact host upper":        {"SECRET.corp.example.", 8000, Blocked},
		"deny wildcard on its port":    {"x.internal.corp.example", 443, Blocked},
		"deny wildcard other port":     {"x.internal.corp.example", 8000, Allowed},
		"deny wildcard apex untouched": {"internal.corp.example", 443, Allowed},
		"unicode target punycode rule": {"bücher.example", 443, Allowed},
		"unicode upper case":           {"BÜCHER.example", 443, Allowed},
		"punycode target":              {"xn--bcher-kva.example", 443, Allowed},
		"punycode upper case":          {"XN--BCHER-KVA.EXAMPLE", 443, Allowed},
		"punycode target unicode rule": {"xn--mnchen-3ya.example", 443, Allowed},
		"invalid punycode":             {"xn--zz.example", 443, BadTarget},
		"ideographic full stops":       {"gitlab。corp。example", 443, Allowed},
		"ideographic trailing stop":    {"gitlab.corp.example。", 443, Allowed},
		"fullwidth letters":            {"ＧＩＴＬＡＢ.corp.example", 443, Allowed},
		"fullwidth digits ipv4":        {"１２７.０.０.１", 9000, BadTarget},
		"zero width joiner":            {"a\u200db.corp.example", 443, BadTarget},
		"wildcard as target":           {"*.corp.example", 443, BadTarget},
		"userinfo":                     {"user@gitlab.corp.example", 443, BadTarget},
		"userinfo with password":       {"u:p@gitlab.corp.example", 443, BadTarget},
		"embedded port":                {"gitlab.corp.example:443", 443, BadTarget},
		"trailing space":               {"gitlab.corp.example ", 443, BadTarget},
		"leading space":                {" gitlab.corp.example", 443, BadTarget},
		"empty host":                   {"", 443, BadTarget},
		"underscore":                   {"my_host.corp.example", 443, BadTarget},
		"percent encoding":             {"gitlab%2ecorp.example", 443, BadTarget},
		"nul byte":                     {"gitlab.corp.example\x00.evil.test", 443, BadTarget},
		"slash":                        {"gitlab.corp.example/x", 443, BadTarget},
		"label of 63":                  {long + ".corp.example", 443, Allowed},
		"label of 64":                  {long + "a.corp.example", 443, BadTarget},
		"name over 253":                {strings.Repeat(long+".", 4) + "corp.example", 443, BadTarget},
		"leading hyphen":               {"-a.corp.example", 443, BadTarget},
		"trailing hyphen":              {"a-.corp.example", 443, BadTarget},
		"hyphens in 3 and 4":           {"r3---sn.corp.example", 443, Allowed},
		"digits in inner label":        {"1e100.corp.example", 443, Allowed},
		"numeric last label":           {"corp.example.123", 443, BadTarget},
		"three numeric labels":         {"1.2.3", 443, BadTarget},
		"hex last label":               {"corp.0x1f", 443, BadTarget},
		"unknown name":                 {"github.com", 443, Missing},
		"localhost is a name":          {"localhost", 443, Missing},
		"port 0":                       {"gitlab.corp.example", 0, BadTarget},
		"port 65536":                   {"gitlab.corp.example", 65536, BadTarget},
		"negative port":                {"gitlab.corp.example", -443, BadTarget},
		"port 65535":                   {"gitlab.corp.example", 65535, Missing},
		"ip rules do not match names":  {"ten.example", 7777, Missing},
		"host rules do not match ip":   {"10.0.0.8", 8080, Missing},
		"decimal ipv4":                 {"2130706433", 7777, BadTarget},
		"octal ipv4":                   {"0177.0.0.1", 7777, BadTarget},
		"hex ipv4":                     {"0x7f.0.0.1", 7777, BadTarget},
		"hex ipv4 one number":          {"0x7f000001", 7777, BadTarget},
		"short ipv4":                   {"127.1", 7777, BadTarget},
		"leading zero octet":           {"010.20.0.1", 443, BadTarget},
		"ipv4 trailing dot":            {"10.20.1.1.", 443, BadTarget},
		"five octets":                  {"1.2.3.4.5", 443, BadTarget},
		"octet over 255":               {"10.20.1.256", 443, BadTarget},
		"bracketed ipv4":               {"[127.0.0.1]", 9000, BadTarget},
		"exact allow lifts loopback":   {"127.0.0.1", 9000, Allowed},
		"exact allow only on its port": {"127.0.0.1", 9001, Blocked},
		"broad cidr does not lift":     {"127.0.0.2", 7777, Blocked},
		"public address by broad cidr": {"8.8.8.8", 7777, Allowed},
		"deny ip beats allow":          {"8.8.4.4", 7777, Blocked},
		"metadata ipv4":                {"169.254.169.254", 7777, Blocked},
		"link-local ipv4":              {"169.254.1.1", 7777, Blocked},
		"exact cidr lifts link-local":  {"169.254.10.10", 80, Allowed},
		"unspecified ipv4":             {"0.0.0.0", 7777, Blocked},
		"this network":                 {"0.1.2.3", 7777, Blocked},
		"broadcast":                    {"255.255.255.255", 7777, Blocked},
		"multicast ipv4":               {"224.0.0.1", 7777, Blocked},
		"multicast ssdp":               {"239.255.255.250", 7777, Blocked},
		"private cidr allowed":         {"10.20.1.1", 443, Allowed},
		"private cidr port range":      {"10.20.1.1", 8100, Allowed},
		"private cidr other port":      {"10.20.1.1", 22, Missing},
		"deny cidr beats allow cidr":   {"10.20.5.1", 443, Blocked},
		"exact ip rule":                {"10.0.0.7", 8080, Allowed},
		"exact ip rule other port":     {"10.0.0.7", 443, Missing},
		"192.168 allowed":              {"192.168.1.1", 443, Allowed},
		"172.16 allowed by ip":         {"172.16.0.1", 22, Allowed},
		"not covered":                  {"11.0.0.1", 443, Missing},
		"loopback ipv6 bracketed":      {"[::1]", 7777, Blocked},
		"loopback ipv6 bare":           {"::1", 7777, Blocked},
		"loopback ipv6 long form":      {"0:0:0:0:0:0:0:1", 7777, Blocked},
		"unspecified ipv6":             {"[::]", 7777, Blocked},
		"link-local ipv6":              {"[fe80::1]", 7777, Blocked},
		"zone id":                      {"fe80::1%eth0", 7777, BadTarget},
		"zone id bracketed":            {"[fe80::1%25eth0]", 7777, BadTarget},
		"multicast ipv6":               {"[ff02::1]", 7777, Blocked},
		"aws ipv6 metadata":            {"[fd00:ec2::254]", 443, Blocked},
		"ula allowed":                  {"[fd00::1]", 443, Allowed},
		"ula upper case":               {"[FD00::1]", 443, Allowed},
		"documentation range":          {"2001:db8::1", 443, Allowed},
		"mapped exact allow":           {"[::ffff:127.0.0.1]", 9000, Allowed},
		"mapped loopback":              {"[::ffff:127.0.0.1]", 7777, Blocked},
		"mapped hex loopback":          {"[::ffff:7f00:1]", 7777, Blocked},
		"mapped metadata":              {"[::ffff:169.254.169.254]", 7777, Blocked},
		"mapped private allowed":       {"[::ffff:10.20.1.1]", 443, Allowed},
		"mapped denied":                {"[::ffff:10.20.5.1]", 443, Blocked},
		"mapped octal":                 {"::ffff:0177.0.0.1", 7777, BadTarget},
		"compatible loopback":          {"[::127.0.0.1]", 7777, Blocked},
		"nat64 loopback":               {"[64:ff9b::7f00:1]", 7777, Blocked},
		"nat64 metadata":               {"[64:ff9b::a9fe:a9fe]", 7777, Blocked},
		"nat64 denied ipv4":            {"[64:ff9b::808:404]", 7777, Blocked},
		"nat64 public":                 {"[64:ff9b::808:808]", 7777, Allowed},
		"6to4 metadata":                {"[2002:a9fe:a9fe::1]", 7777, Blocked},
		"6to4 denied cidr":             {"[2002:a14:501::1]", 7777, Blocked},
		"6to4 public":                  {"[2002:808:808::1]", 7777, Allowed},
		"teredo loopback client":       {"[2001:0:4136:e378:8000:63bf:80ff:fffe]", 7777, Blocked},
		"teredo public client":         {"[2001:0:4136:e378:8000:63bf:f7f7:f7f7]", 7777, Allowed},
		"alibaba metadata":             {"100.100.100.200", 7777, Blocked},
		"alibaba neighbour":            {"100.100.100.201", 7777, Allowed},
		"azure wireserver":             {"168.63.129.16", 7777, Blocked},
		"azure wireserver neighbour":   {"168.63.129.17", 7777, Allowed},
		"mapped alibaba metadata":      {"[::ffff:100.100.100.200]", 7777, Blocked},
		"nat64 azure wireserver":       {"[64:ff9b::a83f:8110]", 7777, Blocked},
		"site-local":                   {"[fec0::1]", 7777, Blocked},
		"site-local top of block":      {"[feff:ffff::1]", 7777, Blocked},
		"nat64 local-use":              {"[64:ff9b:1::a00:1]", 7777, Blocked},
		"nat64 local-use /64 form":     {"[64:ff9b:1:a:0:a00:100:0]", 7777, Blocked},
		"nat64 local-use end":          {"[64:ff9b:1:ffff:ffff:ffff:ffff:ffff]", 7777, Blocked},
		"past nat64 local-use":         {"[64:ff9b:2::1]", 7777, Allowed},
		"translated loopback":          {"[::ffff:0:127.0.0.1]", 7777, Blocked},
		"translated metadata":          {"[::ffff:0:a9fe:a9fe]", 7777, Blocked},
		"translated denied ipv4":       {"[::ffff:0:808:404]", 7777, Blocked},
		"translated public":            {"[::ffff:0:808:808]", 7777, Allowed},
		"bracketed with port":          {"[::1]:443", 443, BadTarget},
		"unbalanced bracket":           {"[::1", 443, BadTarget},
		"ipv6 garbage":                 {"[fd00::1::2]", 443, BadTarget},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := l.Decide(tc.host, tc.port)
			assert.Equal(t, tc.want, d.Verdict, "reason: %s", d.Reason)
			assert.Equal(t, tc.want == Allowed, d.Allowed())
			assert.NotEmpty(t, d.Reason)
			if tc.want == Allowed || tc.want == Blocked {
				assert.NotEmpty(t, d.Rule, "an allow or block names its rule")
			}
		})
	}
}

func TestDecideExplains(t *testing.T) {
	l := testRules(t)
	tests := map[string]struct {
		host   string
		port   int
		rule   string
		reason string
	}{
		"metadata": {"169.254.169.254", 7777, "always-blocked link-local",
			"169.254.169.254 is link-local (cloud metadata) and no allow rule names it"},
		"loopback lifted": {"127.0.0.1", 9000, "allow ip=127.0.0.1 ports=9000",
			"127.0.0.1 is loopback, allowed because allow ip=127.0.0.1 ports=9000 names it exactly"},
		"loopback wrong port": {"127.0.0.1", 22, "always-blocked loopback",
			"127.0.0.1 is loopback and allow ip=127.0.0.1 ports=9000 names it but not port 22"},
		"nat64": {"64:ff9b::7f00:1", 7777, "always-blocked loopback",
			"64:ff9b::7f00:1 carries 127.0.0.1 (NAT64), which is loopback and no allow rule names it"},
		"deny cidr": {"10.20.5.9", 443, "deny cidr=10.20.5.0/24 ports=*",
			"10.20.5.9 matches deny cidr=10.20.5.0/24 ports=*"},
		"wildcard": {"API.corp.example", 443, "allow host=*.corp.example ports=443,8000-8100",
			"the target and port match allow host=*.corp.example ports=443,8000-8100"},
		"first rule wins": {"gitlab.corp.example", 443, "allow host=gitlab.corp.example ports=443", ""},
		"port not listed": {"gitlab.corp.example", 22, "",
			"gitlab.corp.example is named by allow host=gitlab.corp.example ports=443 but port 22 is not in its ports"},
		"unknown name": {"github.com", 443, "", "no allow host rule names github.com"},
		"addr port not listed": {"11.0.0.1", 443, "",
			"11.0.0.1 is covered by allow cidr=0.0.0.0/0 ports=7777 but port 443 is not in its ports"},
		"aws metadata6": {"fd00:ec2::254", 443, "always-blocked metadata", ""},
		"alibaba": {"100.100.100.200", 7777, "always-blocked metadata",
			"100.100.100.200 is the Alibaba Cloud instance metadata address and no allow rule names it"},
		"wireserver": {"168.63.129.16", 7777, "always-blocked metadata",
			"168.63.129.16 is the Azure WireServer address and no allow rule names it"},
		"site-local": {"fec0::1", 7777, "always-blocked site-local",
			"fec0::1 is IPv6 site-local (fec0::/10, deprecated) and no allow rule names it"},
		"nat64 local-use": {"64:ff9b:1::a9fe:a9fe", 7777, "always-blocked nat64-local",
			"64:ff9b:1::a9fe:a9fe is in the local-use NAT64 prefix 64:ff9b:1::/48, which can carry any IPv4 address and no allow rule names it"},
		"translated": {"::ffff:0:127.0.0.1", 7777, "always-blocked loopback",
			"::ffff:0:7f00:1 carries 127.0.0.1 (IPv4-translated), which is loopback and no allow rule names it"},
		"broadcast": {"255.255.255.255", 7777, "always-blocked broadcast", ""},
		"multicast": {"ff02::1", 7777, "always-blocked multicast", ""},
		"bad port":  {"gitlab.corp.example", 0, "", "port 0 is outside 1-65535"},
		"octal": {"0177.0.0.1", 443, "",
			`bad target: host "0177.0.0.1": an IPv4 address must be four decimal octets 0-255 without leading zeros`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := l.Decide(tc.host, tc.port)
			assert.Equal(t, tc.rule, d.Rule)
			if tc.reason != "" {
				assert.Equal(t, tc.reason, d.Reason)
			}
		})
	}
}

func TestCheckAddr(t *testing.T) {
	l := testRules(t)
	tests := map[string]struct {
		addr netip.Addr
		port int
		want Verdict
	}{
		"not in any allow rule":     {netip.MustParseAddr("11.1.1.1"), 443, Allowed},
		"denied cidr":               {netip.MustParseAddr("10.20.5.3"), 443, Blocked},
		"denied ip on its port":     {netip.MustParseAddr("8.8.4.4"), 7777, Blocked},
		"denied ip other port":      {netip.MustParseAddr("8.8.4.4"), 443, Allowed},
		"loopback":                  {netip.MustParseAddr("127.0.0.1"), 443, Blocked},
		"loopback exact allow":      {netip.MustParseAddr("127.0.0.1"), 9000, Allowed},
		"metadata":                  {netip.MustParseAddr("169.254.169.254"), 80, Blocked},
		"aws ipv6 metadata":         {netip.MustParseAddr("fd00:ec2::254"), 443, Blocked},
		"mapped loopback":           {netip.MustParseAddr("::ffff:127.0.0.2"), 443, Blocked},
		"zoned link-local":          {netip.MustParseAddr("fe80::1%eth0"), 443, Blocked},
		"nat64 denied":              {netip.MustParseAddr("64:ff9b::808:404"), 7777, Blocked},
		"6to4 loopback":             {netip.MustParseAddr("2002:7f00:1::"), 443, Blocked},
		"teredo metadata":           {netip.MustParseAddr("2001:0:4136:e378:8000:63bf:5601:5601"), 443, Blocked},
		"public ipv6":               {netip.MustParseAddr("2606:4700::1111"), 443, Allowed},
		"ula":                       {netip.MustParseAddr("fd12::1"), 443, Allowed},
		"invalid address":           {netip.Addr{}, 443, BadTarget},
		"port 0":                    {netip.MustParseAddr("11.1.1.1"), 0, BadTarget},
		"port 65536":                {netip.MustParseAddr("11.1.1.1"), 65536, BadTarget},
		"unspecified":               {netip.IPv6Unspecified(), 443, Blocked},
		"link-local exact cidr /32": {netip.MustParseAddr("169.254.10.10"), 80, Allowed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := l.CheckAddr(tc.addr, tc.port)
			assert.Equal(t, tc.want, d.Verdict, "reason: %s", d.Reason)
			assert.NotEmpty(t, d.Reason)
		})
	}
	d := l.CheckAddr(netip.MustParseAddr("11.1.1.1"), 443)
	assert.Equal(t, Decision{Verdict: Allowed, Reason: "address passes deny and unsafe-address checks"}, d)
}

// A list without allow rules refuses everything: a target no rule covers
// is Missing, and one a deny rule or the always-blocked set refuses is
// Blocked, so a caller that waives Missing (report mode) still refuses it.
func TestEmptyListRefusesEverything(t *testing.T) {
	onlyDeny, err := Compile(nil, []RuleSpec{{CIDR: "10.0.0.0/8"}, {Host: "secret.corp.example"}})
	require.NoError(t, err)
	empty, err := Compile(nil, nil)
	require.NoError(t, err)
	lists := map[string]*List{"nil": nil, "no rules": empty, "deny only": onlyDeny}
	for name, l := range lists {
		t.Run(name, func(t *testing.T) {
			for _, host := range []string{"gitlab.corp.example", "8.8.8.8", "[2606:4700::1111]"} {
				d := l.Decide(host, 443)
				assert.Equal(t, Missing, d.Verdict, host)
				assert.Contains(t, d.Reason, "allowlist is empty")
			}
			for _, host := range []string{"::1", "127.0.0.1", "169.254.169.254", "[::ffff:127.0.0.1]", "100.100.100.200"} {
				d := l.Decide(host, 443)
				assert.Equal(t, Blocked, d.Verdict, host)
				assert.Contains(t, d.Rule, "always-blocked", host)
			}
			assert.Equal(t, Missing, l.CheckAddr(netip.MustParseAddr("8.8.8.8"), 443).Verdict)
			assert.Equal(t, Blocked, l.CheckAddr(netip.MustParseAddr("127.0.0.1"), 443).Verdict)
			assert.Equal(t, BadTarget, l.Decide("0177.0.0.1", 443).Verdict, "malformed stays malformed")
		})
	}
	assert.Equal(t, Blocked, onlyDeny.Decide("10.1.2.3", 443).Verdict, "a deny rule refuses without allow rules")
	assert.Equal(t, Blocked, onlyDeny.Decide("secret.corp.example", 443).Verdict)
	assert.Equal(t, Blocked, onlyDeny.CheckAddr(netip.MustParseAddr("10.1.2.3"), 443).Verdict)
	assert.Equal(t, 0, (*List)(nil).Len())
	assert.Equal(t, empty.SHA256(), (*List)(nil).SHA256())
}

func TestFirstMatchingRuleDecides(t *testing.T) {
	l, err := Compile([]RuleSpec{
		{Host: "*.corp.example", Ports: []string{"8443"}},
		{Host: "a.corp.example", Ports: []string{"443"}},
		{CIDR: "10.0.0.0/8", Ports: []string{"443"}},
		{CIDR: "10.1.0.0/16", Ports: []string{"443", "22"}},
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, "allow host=a.corp.example ports=443", l.Decide("a.corp.example", 443).Rule)
	assert.Equal(t, "allow host=*.corp.example ports=8443", l.Decide("a.corp.example", 8443).Rule)
	assert.Equal(t, "allow cidr=10.0.0.0/8 ports=443", l.Decide("10.1.2.3", 443).Rule)
	assert.Equal(t, "allow cidr=10.1.0.0/16 ports=22,443", l.Decide("10.1.2.3", 22).Rule)
}

func TestVerdictString(t *testing.T) {
	tests := map[Verdict]string{
		VerdictUnknown: "unknown", Allowed: "allowed", Missing: "missing",
		Blocked: "blocked", BadTarget: "bad_target", Verdict(9): "verdict(9)",
	}
	for v, want := range tests {
		assert.Equal(t, want, v.String())
		text, err := v.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, want, string(text))
	}
	assert.False(t, Decision{}.Allowed(), "the zero decision never allows")
}

func TestConcurrentDecide(t *testing.T) {
	l := testRules(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				assert.Equal(t, Allowed, l.Decide("api.corp.example", 443).Verdict)
				assert.Equal(t, Blocked, l.CheckAddr(netip.MustParseAddr("169.254.169.254"), 443).Verdict)
			}
		})
	}
	wg.Wait()
}
