package resolve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestLookupAAndAAAA(t *testing.T) {
	z := dnstest.NewZone(t,
		"jira.corp.example. 60 IN AAAA fd00::1",
		"jira.corp.example. 60 IN A 10.0.0.1",
		"jira.corp.example. 30 IN A 10.0.0.2",
		"www.corp.example. 120 IN CNAME jira.corp.example.",
	)
	tests := map[string]struct {
		host     string
		wantName string
	}{
		"direct":                {host: "jira.corp.example", wantName: "jira.corp.example."},
		"upper case and dot":    {host: "JIRA.Corp.Example.", wantName: "jira.corp.example."},
		"cname to the same set": {host: "www.corp.example", wantName: "www.corp.example."},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := dnstest.New(t, z.Reply)
			r := newResolver(t, testConfig(t, srv.Addr()))
			got, ans, err := r.Lookup(t.Context(), tc.host)
			require.NoError(t, err)
			assert.Equal(t, addrs("10.0.0.1", "10.0.0.2", "fd00::1"), got, "IPv4 first, then IPv6, in answer order")
			assert.Equal(t, tc.wantName, ans.Name)
			assert.Equal(t, srv.Addr(), ans.Server)
			assert.Equal(t, "NOERROR", ans.Rcode)
			assert.Equal(t, SourceDNS, ans.Source)
			assert.Equal(t, 30*time.Second, ans.TTL, "smallest TTL of the records used")
		})
	}
}

func TestLookupHostsFileWins(t *testing.T) {
	z := dnstest.NewZone(t, "jira.corp.example. 60 IN A 10.0.0.1")
	srv := dnstest.New(t, z.Reply)
	cfg := testConfig(t, srv.Addr())
	writeFile(t, cfg.HostsFile, "# local overrides\n"+
		"fd00::9  jira.corp.example\n"+
		"10.9.9.9 jira.corp.example jira # trailing comment\n")
	clock := newFakeClock()
	cfg.Now = clock.Now
	r := newResolver(t, cfg)

	got, ans, err := r.Lookup(t.Context(), "jira.corp.example")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.9.9.9", "fd00::9"), got)
	assert.Equal(t, SourceHosts, ans.Source)
	assert.Equal(t, "jira.corp.example.", ans.Name)

	got, _, err = r.Lookup(t.Context(), "JIRA")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.9.9.9"), got, "aliases match, case-insensitively")
	assert.Empty(t, srv.Queries(), "the hosts file answered; no DNS query")

	// A changed file is picked up once the check interval has passed.
	writeFile(t, cfg.HostsFile, "10.7.7.7 jira.corp.example\n")
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(cfg.HostsFile, later, later))
	clock.Advance(hostsCheckInterval)
	got, _, err = r.Lookup(t.Context(), "jira.corp.example")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.7.7.7"), got)

	// Removing the name from the file sends the lookup to DNS.
	writeFile(t, cfg.HostsFile, "10.7.7.7 other\n")
	require.NoError(t, os.Chtimes(cfg.HostsFile, later.Add(time.Hour), later.Add(time.Hour)))
	clock.Advance(hostsCheckInterval)
	got, ans, err = r.Lookup(t.Context(), "jira.corp.example")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.0.0.1"), got)
	assert.Equal(t, SourceDNS, ans.Source)
	assert.Equal(t, uint64(3), r.Stats().HostsHits)
}

func TestLookupIPLiteralSendsNoQuery(t *testing.T) {
	srv := dnstest.New(t, dnstest.NewZone(t).Reply)
	r := newResolver(t, testConfig(t, srv.Addr()))
	tests := map[string]struct {
		host string
		want netip.Addr
	}{
		"ipv4":           {host: "10.1.2.3", want: netip.MustParseAddr("10.1.2.3")},
		"ipv6":           {host: "fd00::1", want: netip.MustParseAddr("fd00::1")},
		"bracketed ipv6": {host: "[::1]", want: netip.MustParseAddr("::1")},
		"mapped":         {host: "::ffff:10.0.0.1", want: netip.MustParseAddr("::ffff:10.0.0.1")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ans, err := r.Lookup(t.Context(), tc.host)
			require.NoError(t, err)
			assert.Equal(t, []netip.Addr{tc.want}, got)
			assert.Equal(t, SourceLiteral, ans.Source)
		})
	}
	assert.Empty(t, srv.Queries())
	assert.Zero(t, r.Stats().Queries)
}

func TestLookupInvalidName(t *testing.T) {
	r := newResolver(t, testConfig(t, dnstest.Silent(t).Addr()))
	for name, host := range map[string]string{
		"empty":       "",
		"root":        ".",
		"empty label": "a..b",
		"space":       "a b.example",
		"long label":  string(make([]byte, 64)),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := r.Lookup(t.Context(), host)
			require.ErrorIs(t, err, ErrInvalidName)
			assert.Equal(t, protocol.BadTarget, Reason(err))
		})
	}
	assert.Zero(t, r.Stats().Queries)
}

func TestLookupFailures(t *testing.T) {
	silent := dnstest.Silent(t).Addr()
	tests := map[string]struct {
		reply     dnstest.Handler // nil: a server that never answers
		want      error
		reason    protocol.Reason
		rcode     string
		msg       string
		statCount func(Stats) uint64
	}{
		"nxdomain": {
			reply: dnstest.NewZone(t).Reply, want: ErrNXDomain, reason: protocol.DNSNXDomain, rcode: "NXDOMAIN",
			msg:       "lookup gone.corp.example: no such host (NXDOMAIN): tried gone.corp.example.",
			statCount: func(s Stats) uint64 { return s.NXDomain },
		},
		"nodata": {
			reply: dnstest.NewZone(t, "gone.corp.example. 60 IN TXT hello").Reply, want: ErrNoAddress, reason: protocol.DNSNXDomain,
			rcode: "NOERROR", msg: "lookup gone.corp.example: name has no A or AAAA records: gone.corp.example.",
			statCount: func(s Stats) uint64 { return s.NoAddress },
		},
		"servfail": {
			reply: dnstest.Rcode(dns.RcodeServerFailure), want: ErrServFail, reason: protocol.DNSServFail, rcode: "SERVFAIL",
			msg:       "DNS server failure (SERVFAIL): ",
			statCount: func(s Stats) uint64 { return s.ServFail },
		},
		"refused is a server failure with detail": {
			reply: dnstest.Rcode(dns.RcodeRefused), want: ErrServFail, reason: protocol.DNSServFail, rcode: "REFUSED",
			msg:       "answered REFUSED for gone.corp.example.",
			statCount: func(s Stats) uint64 { return s.ServFail },
		},
		"timeout": {
			want: ErrTimeout, reason: protocol.DNSTimeout, rcode: "",
			msg:       "lookup gone.corp.example: DNS timeout: no answer from " + silent + " after 2 tries",
			statCount: func(s Stats) uint64 { return s.Timeouts },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			server := silent
			if tc.reply != nil {
				server = dnstest.New(t, tc.reply).Addr()
			}
			cfg := testConfig(t, server)
			cfg.Timeout = 150 * time.Millisecond
			r := newResolver(t, cfg)

			start := time.Now()
			got, ans, err := r.Lookup(t.Context(), "gone.corp.example")
			elapsed := time.Since(start)

			require.ErrorIs(t, err, tc.want)
			assert.Nil(t, got)
			assert.Contains(t, err.Error(), tc.msg)
			assert.Equal(t, tc.reason, Reason(err))
			assert.Equal(t, tc.rcode, ans.Rcode)
			assert.Equal(t, "gone.corp.example.", ans.Name)
			assert.Equal(t, uint64(1), tc.statCount(r.Stats()))
			if tc.want == ErrTimeout {
				// Timeout * Attempts for the one server, and not much more.
				assert.GreaterOrEqual(t, elapsed, 2*cfg.Timeout)
				assert.Less(t, elapsed, 2*cfg.Timeout+time.Second)
			}
		})
	}
}

func TestLookupClosedPortIsATimeoutWithDetail(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := pc.LocalAddr().String()
	require.NoError(t, pc.Close())

	cfg := testConfig(t, closed)
	cfg.Timeout = 5 * time.Second
	r := newResolver(t, cfg)
	start := time.Now()
	_, ans, err := r.Lookup(t.Context(), "jira.corp.example")
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "no answer from "+closed+" after 2 tries (last error: ")
	assert.Contains(t, err.Error(), "connection refused")
	assert.Empty(t, ans.Server, "nobody answered")
	assert.Less(t, time.Since(start), cfg.Timeout, "an ICMP refusal does not wait for the timeout")
}

func TestTruncatedReplyRetriedOverTCP(t *testing.T) {
	var records []string
	for i := 1; i <= 40; i++ {
		records = append(records, "big.corp.example. 60 IN A 10.0.1."+strconv.Itoa(i))
	}
	z := dnstest.NewZone(t, records...)
	srv := dnstest.New(t, dnstest.TruncateUDP(dns.TypeA, z.Reply))
	r := newResolver(t, testConfig(t, srv.Addr()))

	got, ans, err := r.Lookup(t.Context(), "big.corp.example")
	require.NoError(t, err)
	assert.Len(t, got, 40)
	assert.Equal(t, netip.MustParseAddr("10.0.1.1"), got[0])
	assert.Equal(t, srv.Addr(), ans.Server)
	assert.Equal(t, []string{"big.corp.example. A tcp"}, srv.Queries().For("big.corp.example.", dns.TypeA).Over("tcp").Strings())
	assert.Empty(t, srv.Queries().For("big.corp.example.", dns.TypeAAAA).Over("tcp"), "AAAA was not truncated")
}

// TestMismatchedRepliesIgnored sends one or more bogus datagrams before the right reply, on
// the same socket, and expects only the right one to count.
func TestMismatchedRepliesIgnored(t *testing.T) {
	bogusAnswer := func(req *dns.Msg, name string, qtype uint16) *dns.Msg {
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}
		rr, _ := dns.NewRR(name + " 60 IN A 6.6.6.6")
		resp.Answer = []dns.RR{rr}
		return resp
	}
	tests := map[string]func(req *dns.Msg) []byte{
		"wrong id": func(req *dns.Msg) []byte {
			m := bogusAnswer(req, req.Question[0].Name, req.Question[0].Qtype)
			m.Id = req.Id + 1
			return dnstest.Pack(t, m)
		},
		"wrong name": func(req *dns.Msg) []byte {
			return dnstest.Pack(t, bogusAnswer(req, "evil.example.", req.Question[0].Qtype))
		},
		"wrong type": func(req *dns.Msg) []byte {
			return dnstest.Pack(t, bogusAnswer(req, req.Question[0].Name, dns.TypeMX))
		},
		"wrong class": func(req *dns.Msg) []byte {
			m := bogusAnswer(req, req.Question[0].Name, req.Question[0].Qtype)
			m.Question[0].Qclass = dns.ClassCHAOS
			return dnstest.Pack(t, m)
		},
		"not a response": func(req *dns.Msg) []byte {
			m := bogusAnswer(req, req.Question[0].Name, req.Question[0].Qtype)
			m.Response = false
			return dnstest.Pack(t, m)
		},
		"garbage": func(*dns.Msg) []byte { return []byte{0xde, 0xad, 0xbe, 0xef} },
		"servfail with wrong id": func(req *dns.Msg) []byte {
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			m.Id = req.Id ^ 0xffff
			return dnstest.Pack(t, m)
		},
	}
	z := dnstest.NewZone(t, "jira.corp.example. 60 IN A 10.0.0.1", "jira.corp.example. 60 IN AAAA fd00::1")
	for name, bogus := range tests {
		t.Run(name, func(t *testing.T) {
			srv := dnstest.NewRaw(t, func(q dnstest.Query, req *dns.Msg) [][]byte {
				return [][]byte{bogus(req), dnstest.Pack(t, z.Reply(q, req))}
			})
			r := newResolver(t, testConfig(t, srv.Addr()))
			got, _, err := r.Lookup(t.Context(), "jira.corp.example")
			require.NoError(t, err)
			assert.Equal(t, addrs("10.0.0.1", "fd00::1"), got)
			assert.Equal(t, uint64(2), r.Stats().Queries, "accepted on the first try, not after a timeout")
		})
	}
}

func TestSearchListAndNdots(t *testing.T) {
	z := dnstest.NewZone(t,
		"jira.corp.example. 60 IN A 10.0.0.1",
		"a.b.corp.example. 60 IN A 10.0.0.2",
		"a.b. 60 IN A 10.0.0.3",
	)
	tests := map[string]struct {
		host     string
		ndots    int
		want     error
		wantAddr []netip.Addr
		wantName string
		asked    []string // A questions, in order
	}{
		"short name uses the search list": {
			host: "jira", wantAddr: addrs("10.0.0.1"), wantName: "jira.corp.example.",
			asked: []string{"jira.other.example. A udp", "jira.corp.example. A udp"},
		},
		"absolute name does not": {
			host: "jira.", want: ErrNXDomain, wantName: "jira.",
			asked: []string{"jira. A udp"},
		},
		"enough dots: as is first": {
			host: "a.b", wantAddr: addrs("10.0.0.3"), wantName: "a.b.",
			asked: []string{"a.b. A udp"},
		},
		"too few dots: search first": {
			host: "a.b", ndots: 2, wantAddr: addrs("10.0.0.2"), wantName: "a.b.corp.example.",
			asked: []string{"a.b.other.example. A udp", "a.b.corp.example. A udp"},
		},
		"as is last, after the search list": {
			host: "nothing", want: ErrNXDomain, wantName: "nothing.",
			asked: []string{"nothing.other.example. A udp", "nothing.corp.example. A udp", "nothing. A udp"},
		},
		"ndots zero": {
			host: "jira", ndots: -1, wantAddr: addrs("10.0.0.1"), wantName: "jira.corp.example.",
			asked: []string{"jira. A udp", "jira.other.example. A udp", "jira.corp.example. A udp"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := dnstest.New(t, z.Reply)
			cfg := testConfig(t, srv.Addr())
			cfg.Search = []string{"other.example", ".corp.example."}
			cfg.Ndots = tc.ndots
			r := newResolver(t, cfg)

			got, ans, err := r.Lookup(t.Context(), tc.host)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.wantAddr, got)
			assert.Equal(t, tc.wantName, ans.Name)
			assert.Equal(t, tc.asked, srv.Queries().For("", dns.TypeA).Over("udp").Strings())
		})
	}
}

func TestSearchReportsTheMostInformativeError(t *testing.T) {
	tests := map[string]struct {
		reply dnstest.Handler
		want  error
		msg   string
	}{
		"servfail on one candidate beats nxdomain on the others": {
			reply: dnstest.ByName(map[string]dnstest.Handler{
				"jira.corp.example.": dnstest.Rcode(dns.RcodeServerFailure),
			}, dnstest.NewZone(t).Reply),
			want: ErrServFail,
			msg:  "answered SERVFAIL for jira.corp.example.",
		},
		"nodata on one candidate beats nxdomain": {
			reply: dnstest.NewZone(t, "jira.corp.example. 60 IN MX 10 mail.corp.example.").Reply,
			want:  ErrNoAddress,
			msg:   "name has no A or AAAA records: jira.corp.example.",
		},
		"all nxdomain": {
			reply: dnstest.NewZone(t).Reply,
			want:  ErrNXDomain,
			msg:   "tried jira.other.example., jira.corp.example., jira.",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := dnstest.New(t, tc.reply)
			cfg := testConfig(t, srv.Addr())
			cfg.Search = []string{"other.example", "corp.example"}
			r := newResolver(t, cfg)
			_, _, err := r.Lookup(t.Context(), "jira")
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.msg)
			assert.Len(t, srv.Queries(), 6, "every candidate was asked A and AAAA")
		})
	}
}

func TestTimeoutStopsTheSearch(t *testing.T) {
	cfg := testConfig(t, dnstest.Silent(t).Addr())
	cfg.Search = []string{"a.example", "b.example"}
	cfg.Timeout, cfg.Attempts = 100*time.Millisecond, 1
	r := newResolver(t, cfg)
	start := time.Now()
	_, ans, err := r.Lookup(t.Context(), "jira")
	require.ErrorIs(t, err, ErrTimeout)
	assert.Equal(t, "jira.a.example.", ans.Name)
	assert.Less(t, time.Since(start), 500*time.Millisecond)
	assert.Equal(t, uint64(2), r.Stats().Queries, "one A and one AAAA, then stop")
}

func TestSecondServerUsedWhenFirstFails(t *testing.T) {
	z := dnstest.NewZone(t, "jira.corp.example. 60 IN A 10.0.0.1")
	tests := map[string]string{
		"first times out": dnstest.Silent(t).Addr(),
		"first refuses":   dnstest.New(t, dnstest.Rcode(dns.RcodeRefused)).Addr(),
	}
	for name, first := range tests {
		t.Run(name, func(t *testing.T) {
			good := dnstest.New(t, z.Reply)
			cfg := testConfig(t, first, good.Addr())
			cfg.Timeout = 150 * time.Millisecond
			r := newResolver(t, cfg)
			start := time.Now()
			got, ans, err := r.Lookup(t.Context(), "jira.corp.example")
			require.NoError(t, err)
			assert.Equal(t, addrs("10.0.0.1"), got)
			assert.Equal(t, good.Addr(), ans.Server)
			assert.Less(t, time.Since(start), 2*cfg.Timeout, "failover after one try, not after every attempt")
		})
	}
}

func TestContextCancellation(t *testing.T) {
	cfg := testConfig(t, dnstest.Silent(t).Addr())
	cfg.Timeout = 10 * time.Second
	r := newResolver(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := r.Lookup(ctx, "jira.corp.example")
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, errors.Is(err, ErrTimeout))
	assert.Less(t, time.Since(start), 2*time.Second)

	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, _, err = r.Lookup(ctx, "jira.corp.example")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, protocol.DNSTimeout, Reason(err))
}

func TestNewReadsResolvConf(t *testing.T) {
	z := dnstest.NewZone(t, "jira.corp.example. 60 IN A 10.0.0.1")
	srv := dnstest.New(t, z.Reply)
	cfg := testConfig(t)
	ap := netip.MustParseAddrPort(srv.Addr())
	// resolv.conf has no port syntax, so point it at a server on port 53 that does not
	// exist and override the port through Config.Servers in the second case.
	writeFile(t, cfg.ResolvConf, "nameserver "+ap.Addr().String()+"\nsearch corp.example\noptions ndots:2 timeout:3 attempts:4\n")

	r := newResolver(t, cfg)
	assert.Equal(t, []string{ap.Addr().String() + ":53"}, r.servers)
	assert.Equal(t, []string{"corp.example."}, r.search)
	assert.Equal(t, 2, r.ndots)
	assert.Equal(t, time.Second, r.timeout, "Config beats resolv.conf")
	assert.Equal(t, 2, r.attempts)

	cfg.Timeout, cfg.Attempts = 0, 0
	cfg.Servers = []string{srv.Addr()}
	r = newResolver(t, cfg)
	assert.Equal(t, 3*time.Second, r.timeout)
	assert.Equal(t, 4, r.attempts)
	got, ans, err := r.Lookup(t.Context(), "jira")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.0.0.1"), got)
	assert.Equal(t, "jira.corp.example.", ans.Name, "search list from resolv.conf")
}

func TestNewServerSources(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.conf")
	writeFile(t, empty, "# nothing here\nsearch corp.example\n")
	tests := map[string]struct {
		servers    []string
		resolvConf string
		want       []string
		wantErr    string
	}{
		"missing file falls back to localhost": {resolvConf: filepath.Join(dir, "missing"), want: []string{"127.0.0.1:53"}},
		"file without nameserver is an error":  {resolvConf: empty, wantErr: "no usable nameserver"},
		"configured servers need no file":      {servers: []string{"10.0.0.2:5353", "fd00::53", "[fd00::54]:53"}, resolvConf: empty, want: []string{"10.0.0.2:5353", "[fd00::53]:53", "[fd00::54]:53"}},
		"configured server must be an address": {servers: []string{"dns.corp.example:53"}, resolvConf: empty, wantErr: `dns server "dns.corp.example:53"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := New(Config{Servers: tc.servers, ResolvConf: tc.resolvConf, HostsFile: filepath.Join(dir, "hosts")})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, r.servers)
		})
	}
}

func TestReason(t *testing.T) {
	tests := map[string]struct {
		err  error
		want protocol.Reason
	}{
		"nil":        {nil, protocol.ReasonUnknown},
		"nxdomain":   {ErrNXDomain, protocol.DNSNXDomain},
		"no address": {ErrNoAddress, protocol.DNSNXDomain},
		"servfail":   {ErrServFail, protocol.DNSServFail},
		"timeout":    {ErrTimeout, protocol.DNSTimeout},
		"invalid":    {ErrInvalidName, protocol.BadTarget},
		"other":      {errors.New("boom"), protocol.ReasonUnknown},
		"canceled":   {context.Canceled, protocol.ReasonUnknown},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, Reason(tc.err))
		})
	}
}

// The answer names every alias the resolver followed, from a server and
// from the cache alike, so a deny rule can judge each of them.
func TestLookupReportsTheCNAMEChain(t *testing.T) {
	z := dnstest.NewZone(t,
		"www.corp.example. 60 IN CNAME lb.corp.example.",
		"lb.corp.example. 60 IN CNAME node.cdn.example.",
		"node.cdn.example. 60 IN A 10.0.0.5",
		"node.cdn.example. 60 IN AAAA fd00::5",
	)
	srv := dnstest.New(t, z.Reply)
	cfg := testConfig(t, srv.Addr())
	clock := newFakeClock()
	cfg.Now = clock.Now
	r := newResolver(t, cfg)
	chain := []string{"lb.corp.example.", "node.cdn.example."}

	got, ans, err := r.Lookup(t.Context(), "WWW.corp.example")
	require.NoError(t, err)
	assert.Equal(t, addrs("10.0.0.5", "fd00::5"), got)
	assert.Equal(t, "www.corp.example.", ans.Name)
	assert.Equal(t, SourceDNS, ans.Source)
	assert.Equal(t, chain, ans.CNAMEs, "in the order followed, each once")

	ans.CNAMEs[0] = "changed.example." // a caller's copy, not the cache's
	clock.Advance(time.Second)
	_, ans, err = r.Lookup(t.Context(), "www.corp.example")
	require.NoError(t, err)
	assert.Equal(t, SourceCache, ans.Source)
	assert.Equal(t, chain, ans.CNAMEs, "a cached answer keeps its chain")
	assert.Len(t, srv.Queries().For("www.corp.example.", dns.TypeA), 1)

	_, ans, err = r.Lookup(t.Context(), "node.cdn.example")
	require.NoError(t, err)
	assert.Empty(t, ans.CNAMEs, "no alias on the way")
}

func TestMergeChains(t *testing.T) {
	assert.Nil(t, mergeChains(nil, nil))
	assert.Equal(t, []string{"a.", "b.", "c."}, mergeChains([]string{"a.", "b."}, []string{"b.", "c."}))
	assert.Equal(t, []string{"c."}, mergeChains(nil, []string{"c."}))
}
