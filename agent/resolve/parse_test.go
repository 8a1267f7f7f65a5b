package resolve

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseResolvConf(t *testing.T) {
	tests := map[string]struct {
		in   string
		want resolvConf
	}{
		"typical": {
			in: "# generated\nnameserver 10.0.0.2\nnameserver fd00::53\nsearch corp.example Lab.Example.\noptions ndots:2 timeout:3 attempts:4 rotate\n",
			want: resolvConf{
				servers: []string{"10.0.0.2:53", "[fd00::53]:53"},
				search:  []string{"corp.example.", "lab.example."},
				ndots:   2, ndotsSet: true, timeout: 3 * time.Second, attempts: 4,
			},
		},
		"only three nameservers, like glibc": {
			in:   "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
			want: resolvConf{servers: []string{"10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"}},
		},
		"bad nameserver lines skipped": {
			in:   "nameserver\nnameserver dns.corp.example\nnameserver 10.0.0.9 extra\n",
			want: resolvConf{servers: []string{"10.0.0.9:53"}},
		},
		"last of domain and search wins": {
			in:   "search a.example b.example\ndomain c.example\n",
			want: resolvConf{search: []string{"c.example."}},
		},
		"search replaces domain": {
			in:   "domain c.example\nsearch a.example a.example . bad..name\n",
			want: resolvConf{search: []string{"a.example."}},
		},
		"comments and blank lines": {
			in:   "; comment\n\n   # indented comment\n\tnameserver 10.0.0.2\r\n",
			want: resolvConf{servers: []string{"10.0.0.2:53"}},
		},
		"options clamped and bad values ignored": {
			in:   "options ndots:99 timeout:0 attempts:100\noptions ndots:x timeout:-1 attempts\n",
			want: resolvConf{ndots: maxNdots, ndotsSet: true, timeout: time.Second, attempts: maxAttemptsOption},
		},
		"ndots zero is kept": {
			in:   "options ndots:0\n",
			want: resolvConf{ndots: 0, ndotsSet: true},
		},
		"zoned ipv6": {
			in:   "nameserver fe80::1%eth0\n",
			want: resolvConf{servers: []string{"[fe80::1%eth0]:53"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, parseResolvConf([]byte(tc.in)))
		})
	}
}

func TestParseResolvConfBoundsInput(t *testing.T) {
	in := strings.Repeat("search "+strings.Repeat("a.", 100)+"example\n", 2000) + "nameserver 10.0.0.2\n"
	rc := parseResolvConf([]byte(in))
	assert.Empty(t, rc.servers, "lines past the size limit are not read")
	many := "search"
	for i := range 100 {
		many += " d" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + ".example"
	}
	assert.LessOrEqual(t, len(parseResolvConf([]byte(many)).search), maxSearchDomains)
}

func TestParseHosts(t *testing.T) {
	in := "127.0.0.1 localhost\n" +
		"10.0.0.1  Jira.Corp.Example. jira # comment 10.6.6.6 evil\n" +
		"fd00::1   jira.corp.example\n" +
		"10.0.0.1  jira\n" +
		"not-an-ip name\n" +
		"10.0.0.2\n" +
		"#10.0.0.3 commented\n" +
		"fe80::1%eth0 linklocal\n"
	got := parseHosts([]byte(in))
	want := hostsTable{
		"localhost":         {netip.MustParseAddr("127.0.0.1")},
		"jira.corp.example": {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		"jira":              {netip.MustParseAddr("10.0.0.1")},
		"linklocal":         {netip.MustParseAddr("fe80::1%eth0")},
	}
	assert.Equal(t, want, got)
}

func TestHandleAnswer(t *testing.T) {
	q := question{id: 4242, name: "www.corp.example.", qtype: dns.TypeA}
	build := func(rcode int, answer ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.Id, m.Response, m.Rcode = q.id, true, rcode
		for _, s := range answer {
			rr, err := dns.NewRR(s)
			require.NoError(t, err)
			m.Answer = append(m.Answer, rr)
		}
		return m
	}
	soa := func(m *dns.Msg, ttl, minimum uint32) *dns.Msg {
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "corp.example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns: "ns.corp.example.", Mbox: "h.corp.example.", Minttl: minimum}}
		return m
	}
	tests := map[string]struct {
		msg     *dns.Msg
		raw     []byte
		want    reply
		wantErr error
	}{
		"cname chain followed": {
			msg: build(0,
				"www.corp.example. 300 IN CNAME lb.corp.example.",
				"lb.corp.example. 120 IN CNAME node.corp.example.",
				"node.corp.example. 60 IN A 10.0.0.5",
				"node.corp.example. 60 IN A 10.0.0.5",
			),
			want: reply{kind: outcomeAddrs, addrs: []netip.Addr{netip.MustParseAddr("10.0.0.5")},
				chain: []string{"lb.corp.example.", "node.corp.example."}, ttl: 60 * time.Second},
		},
		"records for names outside the chain ignored": {
			msg: build(0,
				"other.example. 60 IN A 6.6.6.6",
				"www.corp.example. 60 IN A 10.0.0.1",
				"www.corp.example. 60 IN AAAA fd00::1",
			),
			want: reply{kind: outcomeAddrs, addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, ttl: 60 * time.Second},
		},
		"cname to a name with no records is nodata": {
			msg:  build(0, "www.corp.example. 300 IN CNAME gone.corp.example.", "elsewhere.example. 60 IN A 6.6.6.6"),
			want: reply{kind: outcomeNoData, chain: []string{"gone.corp.example."}, ttl: -1},
		},
		"cname loop is bounded": {
			msg: build(0,
				"www.corp.example. 300 IN CNAME a.corp.example.",
				"a.corp.example. 300 IN CNAME www.corp.example.",
			),
			want: reply{kind: outcomeNoData, chain: []string{"a.corp.example."}, ttl: -1},
		},
		"cname chain longer than the bound": {
			msg: build(0,
				"www.corp.example. 60 IN CNAME c1.example.", "c1.example. 60 IN CNAME c2.example.",
				"c2.example. 60 IN CNAME c3.example.", "c3.example. 60 IN CNAME c4.example.",
				"c4.example. 60 IN CNAME c5.example.", "c5.example. 60 IN CNAME c6.example.",
				"c6.example. 60 IN CNAME c7.example.", "c7.example. 60 IN CNAME c8.example.",
				"c8.example. 60 IN CNAME c9.example.", "c9.example. 60 IN A 10.0.0.9",
			),
			want: reply{kind: outcomeNoData, ttl: -1, chain: []string{"c1.example.", "c2.example.", "c3.example.",
				"c4.example.", "c5.example.", "c6.example.", "c7.example.", "c8.example."}},
		},
		"nxdomain with soa": {
			msg:  soa(build(dns.RcodeNameError), 900, 30),
			want: reply{kind: outcomeNXDomain, rcode: dns.RcodeNameError, ttl: 30 * time.Second},
		},
		"nodata with soa ttl below minimum": {
			msg:  soa(build(0), 10, 30),
			want: reply{kind: outcomeNoData, ttl: 10 * time.Second},
		},
		"refused": {
			msg:  build(dns.RcodeRefused),
			want: reply{kind: outcomeServFail, rcode: dns.RcodeRefused, ttl: -1},
		},
		"truncated": {
			msg:  func() *dns.Msg { m := build(0); m.Truncated = true; return m }(),
			want: reply{kind: outcomeNoData, truncated: true, ttl: -1},
		},
		"case-insensitive question": {
			msg: func() *dns.Msg {
				m := build(0, "WWW.CORP.EXAMPLE. 60 IN A 10.0.0.1")
				m.Question[0].Name = "WWW.Corp.Example."
				return m
			}(),
			want: reply{kind: outcomeAddrs, addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, ttl: 60 * time.Second},
		},
		"wrong id":        {msg: func() *dns.Msg { m := build(0); m.Id++; return m }(), wantErr: errMismatch},
		"query not reply": {msg: func() *dns.Msg { m := build(0); m.Response = false; return m }(), wantErr: errMismatch},
		"no question":     {msg: func() *dns.Msg { m := build(0); m.Question = nil; return m }(), wantErr: errMismatch},
		"garbage":         {raw: []byte{1, 2, 3}, wantErr: errMalformed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			raw := tc.raw
			if tc.msg != nil {
				var err error
				raw, err = tc.msg.Pack()
				require.NoError(t, err)
			}
			got, err := handleAnswer(raw, q)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"nameserver 10.0.0.2\nsearch corp.example\noptions ndots:2 timeout:1 attempts:3\n",
		"domain corp.example\nnameserver fe80::1%eth0\n",
		"options ndots:-1 timeout:999999999999999999999\n",
		"search " + strings.Repeat("a", 300) + "\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc := parseResolvConf(data)
		if len(rc.servers) > maxNameservers || len(rc.search) > maxSearchDomains {
			t.Fatalf("limits exceeded: %+v", rc)
		}
		for _, s := range rc.servers {
			if _, err := netip.ParseAddrPort(s); err != nil {
				t.Fatalf("server %q: %v", s, err)
			}
		}
		for _, d := range rc.search {
			if _, ok := dns.IsDomainName(d); !ok || !strings.HasSuffix(d, ".") {
				t.Fatalf("search domain %q", d)
			}
		}
		if rc.ndots < 0 || rc.ndots > maxNdots || rc.attempts < 0 || rc.attempts > maxAttemptsOption || rc.timeout < 0 {
			t.Fatalf("options out of range: %+v", rc)
		}
	})
}

func FuzzParseHosts(f *testing.F) {
	f.Add([]byte("127.0.0.1 localhost\n::1 localhost ip6-localhost # c\n"))
	f.Add([]byte("fe80::1%eth0 x\n10.0.0.1 a.b. A.B\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, list := range parseHosts(data) {
			if !validName(name) || len(list) == 0 {
				t.Fatalf("bad entry %q -> %v", name, list)
			}
		}
	})
}

func FuzzHandleAnswer(f *testing.F) {
	q := question{id: 7, name: "jira.corp.example.", qtype: dns.TypeA}
	seed := func(rcode int, rrs ...string) []byte {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.Id, m.Response, m.Rcode = q.id, true, rcode
		for _, s := range rrs {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		m.SetEdns0(ednsSize, false)
		b, _ := m.Pack()
		return b
	}
	f.Add(seed(0, "jira.corp.example. 60 IN A 10.0.0.1"))
	f.Add(seed(0, "jira.corp.example. 60 IN CNAME x.example.", "x.example. 60 IN A 10.0.0.2", "x.example. 60 IN CNAME jira.corp.example."))
	f.Add(seed(dns.RcodeNameError))
	f.Add(seed(dns.RcodeServerFailure))
	f.Add([]byte{})
	f.Add([]byte{0, 7, 0x80, 0, 0, 1, 0, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := handleAnswer(data, q)
		if err != nil {
			return
		}
		if rep.kind == outcomeAddrs && len(rep.addrs) == 0 {
			t.Fatal("addresses outcome without addresses")
		}
		for _, a := range rep.addrs {
			if !a.Is4() {
				t.Fatalf("A query produced %v", a)
			}
		}
	})
}
