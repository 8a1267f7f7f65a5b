package allowlist

import (
	"fmt"
	"go/parser"
	"go/token"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchRules builds n rules mixing exact hosts, wildcards, IPv4 blocks of
// several lengths and IPv6 blocks, with a few deny rules.
func benchRules(tb testing.TB, n int) *List {
	tb.Helper()
	allow := make([]RuleSpec, 0, n)
	for i := range n {
		ports := []string{"443", "8000-8100"}
		switch i % 4 {
		case 0:
			allow = append(allow, RuleSpec{Host: fmt.Sprintf("host%d.team%d.example", i, i%97), Ports: ports})
		case 1:
			allow = append(allow, RuleSpec{Host: fmt.Sprintf("*.svc%d.example", i), Ports: ports})
		case 2:
			bits := []int{24, 28, 32}[i%3]
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), bits)
			allow = append(allow, RuleSpec{CIDR: p.String(), Ports: ports})
		case 3:
			p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, byte(i >> 8), byte(i)}), 48)
			allow = append(allow, RuleSpec{CIDR: p.String(), Ports: ports})
		}
	}
	deny := []RuleSpec{{CIDR: "10.255.0.0/16"}, {Host: "*.secret.example"}}
	l, err := Compile(allow, deny)
	require.NoError(tb, err)
	return l
}

var benchTargets = []struct {
	name string
	host string
	want Verdict
}{
	{"name-hit", "host4.team4.example", Allowed},
	{"wildcard-hit", "api.svc5.example", Allowed},
	{"name-miss", "nothere.corp.example.org", Missing},
	{"ip-hit", "10.0.6.9", Allowed},
	{"ipv6-hit", "fd00:7::1", Allowed},
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 10000} {
		l := benchRules(b, n)
		for _, tc := range benchTargets {
			b.Run("rules="+strconv.Itoa(n)+"/"+tc.name, func(b *testing.B) {
				if d := l.Decide(tc.host, 443); d.Verdict != tc.want {
					b.Fatalf("%s: %v (%s)", tc.host, d.Verdict, d.Reason)
				}
				b.ReportAllocs()
				for b.Loop() {
					l.Decide(tc.host, 443)
				}
			})
		}
	}
}

func BenchmarkCheckAddr(b *testing.B) {
	l := benchRules(b, 10000)
	addr := netip.MustParseAddr("93.184.216.34")
	b.ReportAllocs()
	for b.Loop() {
		l.CheckAddr(addr, 443)
	}
}

func TestBenchTargetsHitInBothSizes(t *testing.T) {
	for _, n := range []int{10, 10000} {
		l := benchRules(t, n)
		assert.Equal(t, n+2, l.Len())
		for _, tc := range benchTargets {
			assert.Equal(t, tc.want, l.Decide(tc.host, 443).Verdict, "rules=%d %s", n, tc.name)
		}
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	l := benchRules(t, 10000)
	addr := netip.MustParseAddr("93.184.216.34")
	tests := map[string]func(){
		"name hit":      func() { l.Decide("host4.team4.example", 443) },
		"wildcard hit":  func() { l.Decide("api.svc5.example", 443) },
		"ip hit":        func() { l.Decide("10.0.6.9", 443) },
		"ipv6 hit":      func() { l.Decide("[fd00:7::1]", 443) },
		"checkaddr ok":  func() { l.CheckAddr(addr, 443) },
		"checkaddr v6":  func() { l.CheckAddr(netip.MustParseAddr("2606:4700::1111"), 443) },
		"trailing dot":  func() { l.Decide("host4.team4.example.", 443) },
		"deny wildcard": func() { l.Decide("x.secret.example", 443) },
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			if name == "deny wildcard" {
				// Refusals build a sentence naming the target; one allocation.
				assert.LessOrEqual(t, testing.AllocsPerRun(100, fn), 1.0)
				return
			}
			assert.Zero(t, testing.AllocsPerRun(100, fn))
		})
	}
}

// TestImportsStayPure keeps the package free of project imports and of any
// module beyond the standard library and x/net/idna.
func TestImportsStayPure(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range parsed.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			first, _, _ := strings.Cut(path, "/")
			ok := !strings.Contains(first, ".") || path == "golang.org/x/net/idna"
			assert.True(t, ok, "%s imports %s", f, path)
		}
	}
}
