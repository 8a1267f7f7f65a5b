package allowlist

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var targetSeeds = []string{
	"gitlab.corp.example", "GitLab.Corp.Example.", "bücher.example", "xn--bcher-kva.example",
	"*.corp.example", "user@host", "host:443", "", " ", ".", "..", "a..b",
	"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "010.0.0.1", "1.2.3.4.",
	"::1", "[::1]", "[::]", "[::1]:443", "fe80::1%eth0", "[fe80::1%25eth0]", "[127.0.0.1]",
	"::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
	"169.254.169.254", "fd00:ec2::254", "255.255.255.255", "224.0.0.1", "0.0.0.0",
	"100.100.100.200", "168.63.129.16", "fec0::1", "64:ff9b:1::7f00:1", "::ffff:0:127.0.0.1",
	"１２７.０.０.１", "gitlab。corp。example", "xn--zz.example", "a\u200db.example", "\xff\xfe",
}

// oracleUnsafe is an independent statement of the always-blocked set, written
// as prefixes rather than with netip's predicates.
var oracleUnsafe = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"), netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("100.100.100.200/32"), netip.MustParsePrefix("168.63.129.16/32"),
	netip.MustParsePrefix("fec0::/10"), netip.MustParsePrefix("64:ff9b:1::/48"),
}

// oracleForms lists the address and every IPv4 address it carries.
func oracleForms(a netip.Addr) []netip.Addr {
	a = a.WithZone("")
	out := []netip.Addr{a, a.Unmap()}
	b := a.As16()
	v4at := func(off int, xor byte) netip.Addr {
		return netip.AddrFrom4([4]byte{b[off] ^ xor, b[off+1] ^ xor, b[off+2] ^ xor, b[off+3] ^ xor})
	}
	if !a.Is6() {
		return out
	}
	if netip.MustParsePrefix("64:ff9b::/96").Contains(a) || netip.MustParsePrefix("::/96").Contains(a) ||
		netip.MustParsePrefix("::ffff:0:0:0/96").Contains(a) {
		out = append(out, v4at(12, 0))
	}
	if netip.MustParsePrefix("2002::/16").Contains(a) {
		out = append(out, v4at(2, 0))
	}
	if netip.MustParsePrefix("2001::/32").Contains(a) {
		out = append(out, v4at(12, 0xff))
	}
	return out
}

func oracleIsUnsafe(a netip.Addr) bool {
	for _, f := range oracleForms(a) {
		for _, p := range oracleUnsafe {
			if p.Contains(f) {
				return true
			}
		}
	}
	return false
}

// hasExactAllow reports whether an allow rule names exactly addr with port.
func hasExactAllow(l *List, a netip.Addr, port int) bool {
	allow, _ := l.Specs()
	a = a.WithZone("").Unmap()
	for _, s := range allow {
		text := s.IP
		if text == "" && s.CIDR != "" {
			p := netip.MustParsePrefix(s.CIDR)
			if !p.IsSingleIP() {
				continue
			}
			text = p.Addr().String()
		}
		if text != a.String() {
			continue
		}
		for _, pr := range s.Ports {
			lo, hi, _ := strings.Cut(pr, "-")
			if hi == "" {
				hi = lo
			}
			l, _ := strconv.Atoi(lo)
			h, _ := strconv.Atoi(hi)
			if port >= l && port <= h {
				return true
			}
		}
	}
	return false
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		tg, err := NormalizeHost(host)
		if err != nil {
			require.ErrorIs(t, err, ErrBadTarget)
			require.Equal(t, Target{}, tg)
			return
		}
		if tg.Addr.IsValid() {
			require.Empty(t, tg.Name)
			require.Empty(t, tg.Addr.Zone(), "zones are refused")
			if tg.Addr.Is4() {
				require.Equal(t, tg.Addr.String(), host, "IPv4 only in canonical form")
			}
			again, err := NormalizeHost(tg.Addr.String())
			require.NoError(t, err)
			require.Equal(t, tg, again)
			return
		}
		require.NotEmpty(t, tg.Name)
		require.LessOrEqual(t, len(tg.Name), 253)
		for _, c := range []byte(tg.Name) {
			require.True(t, c == '.' || c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9', "byte %q in %q", c, tg.Name)
		}
		again, err := NormalizeHost(tg.Name)
		require.NoError(t, err, "normalized %q from %q", tg.Name, host)
		require.Equal(t, tg, again, "normalization is idempotent")
	})
}

func FuzzCompile(f *testing.F) {
	f.Add("*.corp.example", "", "", "443,8000-8100", false)
	f.Add("", "10.0.0.7", "", "8080", false)
	f.Add("", "", "10.20.0.0/16", "", true)
	f.Add("", "", "::ffff:10.0.0.0/104", "1-65535", false)
	f.Add("a*.b", "", "", "022", false)
	f.Add("Bücher.example.", "", "", "8100-8000", false)
	f.Add("", "fe80::1%eth0", "", "+22", true)
	f.Add("", "", "10.0.0.1/8", "0,65536", false)
	f.Fuzz(func(t *testing.T, host, ip, cidr, ports string, deny bool) {
		spec := RuleSpec{Host: host, IP: ip, CIDR: cidr, Line: 7}
		if ports != "" {
			spec.Ports = strings.Split(ports, ",")
		}
		allow, denies := []RuleSpec{spec}, []RuleSpec(nil)
		if deny {
			allow, denies = nil, allow
		}
		l, err := Compile(allow, denies)
		if err != nil {
			require.ErrorIs(t, err, ErrBadRule)
			prefix := "allow[0] (line 7): "
			if deny {
				prefix = "deny[0] (line 7): "
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				require.True(t, strings.HasPrefix(line, prefix), "%q names the rule", line)
			}
			return
		}
		require.Equal(t, 1, l.Len())
		a, d := l.Specs()
		back, err := Compile(a, d)
		require.NoError(t, err, "normalized rules compile")
		require.Equal(t, l.SHA256(), back.SHA256())
		a2, d2 := back.Specs()
		require.Equal(t, a, a2, "normalization is idempotent")
		require.Equal(t, d, d2)
	})
}

func FuzzDecide(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add(s, 443)
		f.Add(s, 9000)
		f.Add(s, 7777)
	}
	f.Add("127.0.0.1", 0)
	f.Add("127.0.0.1", 65536)
	l := testRules(f)
	f.Fuzz(func(t *testing.T, host string, port int) {
		d := l.Decide(host, port)
		require.NotEqual(t, VerdictUnknown, d.Verdict)
		require.NotEmpty(t, d.Reason)
		tg, err := NormalizeHost(host)
		if err != nil || port < 1 || port > 65535 {
			require.Equal(t, BadTarget, d.Verdict)
			return
		}
		require.NotEqual(t, BadTarget, d.Verdict)
		if !tg.IsAddr() {
			// A name is judged by the very same decision after normalization.
			require.Equal(t, d, l.Decide(tg.Name, port))
			return
		}
		if d.Allowed() && oracleIsUnsafe(tg.Addr) {
			require.True(t, hasExactAllow(l, tg.Addr, port), "%s:%d allowed by %q", host, port, d.Rule)
		}
		c := l.CheckAddr(tg.Addr, port)
		if d.Verdict == Blocked {
			require.Equal(t, Blocked, c.Verdict, "Decide and CheckAddr agree on blocks")
		}
		if oracleIsUnsafe(tg.Addr) && !hasExactAllow(l, tg.Addr, port) {
			require.Equal(t, Blocked, c.Verdict)
		}
	})
}

func TestAddrTableMatchesLinearScan(t *testing.T) {
	// Deterministic pseudo-random blocks, nested and disjoint, checked
	// against a linear scan over every rule.
	var seed uint64 = 42
	next := func() uint64 {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return seed
	}
	var specs []RuleSpec
	for i := range 400 {
		a := netip.AddrFrom4([4]byte{10, byte(next() % 4), byte(next()), byte(next())})
		bits := 8 + int(next()%25)
		if i%3 == 0 {
			a = netip.AddrFrom16([16]byte{0xfd, 0, byte(next() % 4), byte(next()), 15: byte(next())})
			bits = 8 + int(next()%121)
		}
		p := netip.PrefixFrom(a, bits).Masked()
		specs = append(specs, RuleSpec{CIDR: p.String(), Ports: []string{strconv.Itoa(1 + int(next()%3))}})
	}
	l, err := Compile(specs, nil)
	require.NoError(t, err)
	for range 20000 {
		a := netip.AddrFrom4([4]byte{10, byte(next() % 4), byte(next()), byte(next())})
		if next()%3 == 0 {
			a = netip.AddrFrom16([16]byte{0xfd, 0, byte(next() % 4), byte(next()), 15: byte(next())})
		}
		port := 1 + int(next()%3)
		want := ""
		for i, r := range l.allow {
			if r.prefix.Contains(a) && r.ports.contains(port) {
				want = l.allow[i].text
				break
			}
		}
		got := ""
		if hit, _ := l.allowAddrs.lookup(a, port); hit != nil {
			got = hit.text
		}
		require.Equal(t, want, got, "%s port %d", a, port)
	}
}

func TestErrorsWrapSentinels(t *testing.T) {
	_, err := NormalizeHost("0x7f.0.0.1")
	assert.True(t, errors.Is(err, ErrBadTarget))
	assert.False(t, errors.Is(err, ErrBadRule))
}
