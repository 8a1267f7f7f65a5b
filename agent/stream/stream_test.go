package stream

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/audit"
	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// decisionEnv is one agent with a policy covering every decision a
// stream can get, the targets behind it and the DNS it asks.
type decisionEnv struct {
	session *tunneltest.RelaySession
	dials   *testkit.DialLog
	dns     *dnstest.Server
	ok      *testkit.Target // 127.0.0.1:P, allowed
	loop    *testkit.Target // 127.0.0.9:P, loopback no rule names
	unlist  *testkit.Target // 127.0.0.1:Q, no rule allows port Q
	refused int             // 127.0.0.1:R, allowed, nothing listens
}

func newDecisionEnv(t *testing.T) *decisionEnv {
	t.Helper()
	env := &decisionEnv{dials: &testkit.DialLog{}}
	env.ok = testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	p := env.ok.Port()
	env.loop = testkit.NewTarget(t, net.JoinHostPort("127.0.0.9", strconv.Itoa(p)), testkit.ReplyAfterEOF)
	env.unlist = testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	env.refused = testkit.RefusedPort(t)
	env.dns = dnstest.New(t, dnstest.ByName(map[string]dnstest.Handler{
		"fail.test.": dnstest.Rcode(dns.RcodeServerFailure),
		"slow.test.": dnstest.Drop,
	}, dnstest.NewZone(t,
		"ok.test. 0 IN A 127.0.0.1",
		"multi.test. 0 IN A 127.0.0.2",
		"multi.test. 0 IN A 127.0.0.1",
		"mixed.test. 0 IN A 10.99.0.1",
		"mixed.test. 0 IN A 127.0.0.9",
		"mixed.test. 0 IN A 127.0.0.1",
		"loop.test. 0 IN A 127.0.0.9",
		"denied.test. 0 IN A 10.99.0.1",
		"unlisted.example. 0 IN A 127.0.0.1",
	).Reply))

	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
allow:
  - host: "*.test"
    ports: [%[2]d]
  - ip: 127.0.0.1
    ports: [%[2]d, %[3]d]
  - ip: 127.0.0.2
    ports: [%[2]d]
  - cidr: 169.254.0.0/16
    ports: [80]
deny:
  - cidr: 10.99.0.0/16
`, relay.URL(), p, env.refused))
	serve(t, testServer{Config: cfg, Dial: env.dials.Dial, Resolver: testkit.NewResolver(t, env.dns.Addr(), -1)})
	env.session = relay.Session(t)
	return env
}

func TestStreamDecisions(t *testing.T) {
	env := newDecisionEnv(t)
	p := env.ok.Port()
	okAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	at := func(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(p)) }

	tests := map[string]struct {
		host      string
		port      int
		want      protocol.Reason // empty: ok
		wantDials []string
		noLookup  string // an FQDN the DNS server must not be asked
	}{
		"allowed ip":                  {host: "127.0.0.1", port: p, wantDials: []string{okAddr}},
		"allowed name":                {host: "ok.test", port: p, wantDials: []string{okAddr}},
		"name with trailing dot":      {host: "OK.test.", port: p, wantDials: []string{okAddr}},
		"name from hosts file":        {host: "hostsfile.test", port: p, wantDials: []string{okAddr}, noLookup: "hostsfile.test."},
		"first address refuses":       {host: "multi.test", port: p, wantDials: []string{at("127.0.0.2"), okAddr}},
		"blocked addresses skipped":   {host: "mixed.test", port: p, wantDials: []string{okAddr}},
		"name not allowlisted":        {host: "unlisted.example", port: env.unlist.Port(), want: protocol.AllowlistMissing, noLookup: "unlisted.example."},
		"port not allowlisted":        {host: "ok.test", port: env.unlist.Port(), want: protocol.AllowlistMissing, noLookup: "ok.test."},
		"ip not allowlisted":          {host: "10.1.2.3", port: 443, want: protocol.AllowlistMissing},
		"metadata address":            {host: "169.254.169.254", port: 80, want: protocol.TargetBlocked},
		"unnamed loopback":            {host: "127.0.0.9", port: p, want: protocol.TargetBlocked},
		"ipv4-mapped loopback":        {host: "[::ffff:127.0.0.9]", port: p, want: protocol.TargetBlocked},
		"deny cidr literal":           {host: "10.99.0.5", port: p, want: protocol.TargetBlocked},
		"name resolving to loopback":  {host: "loop.test", port: p, want: protocol.TargetBlocked},
		"name resolving to deny cidr": {host: "denied.test", port: p, want: protocol.TargetBlocked},
		"hex ipv4":                    {host: "0x7f.0.0.1", port: p, want: protocol.BadTarget, noLookup: "0x7f.0.0.1."},
		"short ipv4":                  {host: "127.1", port: p, want: protocol.BadTarget, noLookup: "127.1."},
		"embedded port":               {host: "ok.test:80", port: p, want: protocol.BadTarget},
		"nxdomain":                    {host: "nx.test", port: p, want: protocol.DNSNXDomain},
		"servfail":                    {host: "fail.test", port: p, want: protocol.DNSServFail},
		"dns timeout":                 {host: "slow.test", port: p, want: protocol.DNSTimeout},
		"refused":                     {host: "127.0.0.1", port: env.refused, want: protocol.ConnectRefused, wantDials: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(env.refused))}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(env.dials.Addrs())
			okBefore := env.ok.Accepted.Load()
			lookupsBefore := len(env.dns.Queries().For(tc.noLookup, dns.TypeA))
			res, st := env.session.Dial(t, testkit.DialRequest(tc.host, tc.port))

			var dialled []string // nil when nothing was dialled
			if all := env.dials.Addrs(); len(all) > before {
				dialled = all[before:]
			}
			assert.Equal(t, tc.wantDials, dialled, "addresses dialled")
			assert.Zero(t, env.loop.Accepted.Load(), "a blocked address is never reached")
			assert.Zero(t, env.unlist.Accepted.Load(), "a target off the allowlist is never reached")
			if tc.noLookup != "" {
				assert.Len(t, env.dns.Queries().For(tc.noLookup, dns.TypeA), lookupsBefore, "no DNS question for %s", tc.noLookup)
			}
			if tc.want != "" {
				assert.False(t, res.OK)
				assert.Equal(t, tc.want, res.Reason, "%+v", res)
				assert.NotEmpty(t, res.Message)
				assert.Equal(t, okBefore, env.ok.Accepted.Load())
				return
			}
			require.True(t, res.OK, "%+v", res)
			assert.Empty(t, res.Reason)
			assert.Equal(t, okAddr, res.Addr)
			assert.NotEmpty(t, res.Rule, "an ok names the rule that allowed it")
			// Half-close both ways: the target answers only after it saw
			// EOF, and the stream ends after the answer.
			assert.Equal(t, "pong:hello "+name, testkit.Exchange(t, st, "hello "+name))
		})
	}
}

func TestStreamProtocolFaults(t *testing.T) {
	env := newDecisionEnv(t)
	frame := func(typ protocol.FrameType, body string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)+1))
		return append(append(b, byte(typ)), body...)
	}
	request := func(req protocol.Request) []byte {
		b, err := protocol.AppendFrame(nil, protocol.FrameRequest, req)
		require.NoError(t, err)
		return b
	}
	unknownOp := testkit.DialRequest("127.0.0.1", env.ok.Port())
	unknownOp.Op = "teleport"
	noPort := testkit.DialRequest("127.0.0.1", 0)
	longHost := testkit.DialRequest(strings.Repeat("a", protocol.MaxHostLen+1), 443)

	tests := map[string]struct {
		frame []byte
		want  protocol.Reason
	}{
		"unknown op":          {request(unknownOp), protocol.UnsupportedOp},
		"body not json":       {frame(protocol.FrameRequest, "{not json"), protocol.ProtocolError},
		"wrong frame type":    {frame(protocol.FrameHello, `{"agent_id":"x"}`), protocol.ProtocolError},
		"empty frame":         {[]byte{0, 0, 0, 0}, protocol.ProtocolError},
		"frame over the cap":  {binary.BigEndian.AppendUint32(nil, protocol.MaxStreamFrame+1), protocol.ProtocolError},
		"port out of range":   {request(noPort), protocol.ProtocolError},
		"host over the limit": {request(longHost), protocol.ProtocolError},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, _ := env.session.DialRaw(t, tc.frame)
			assert.False(t, res.OK)
			assert.Equal(t, tc.want, res.Reason, "%+v", res)
			assert.NotEmpty(t, res.Message)
		})
	}
	assert.Empty(t, env.dials.Addrs(), "a bad request never dials")
	assert.Zero(t, env.ok.Accepted.Load())
	assert.False(t, env.session.Closed(), "a bad stream does not end the tunnel")
}

// A DNS server that flips between an allowed and a blocked address with
// TTL 0 gets exactly one question per stream, and only the address that
// was checked is dialled.
func TestDNSRebindingNeverReachesBlockedAddress(t *testing.T) {
	good := testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	p := good.Port()
	bad := testkit.NewTarget(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(p)), testkit.ReplyAfterEOF)
	flip := [2]*dnstest.Zone{
		dnstest.NewZone(t, "rebind.test. 0 IN A 127.0.0.1"),
		dnstest.NewZone(t, "rebind.test. 0 IN A 127.0.0.2"),
	}
	d := dnstest.New(t, func(q dnstest.Query, req *dns.Msg) *dns.Msg {
		return flip[q.Seen%2].Reply(q, req) // allowed first, then blocked, and so on
	})
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
allow:
  - host: rebind.test
    ports: [%[2]d]
  - ip: 127.0.0.1
    ports: [%[2]d]
`, relay.URL(), p))
	dials := &testkit.DialLog{}
	serve(t, testServer{Config: cfg, Dial: dials.Dial, Resolver: testkit.NewResolver(t, d.Addr(), 0)})
	s := relay.Session(t)

	const streams = 6
	var wantDials []string
	for i := range streams {
		res, st := s.Dial(t, testkit.DialRequest("rebind.test", p))
		assert.Len(t, d.Queries().For("rebind.test.", dns.TypeA), i+1, "exactly one resolution per stream")
		if i%2 == 0 {
			require.True(t, res.OK, "stream %d: %+v", i, res)
			assert.Equal(t, good.Addr(), res.Addr)
			assert.Equal(t, "pong:x", testkit.Exchange(t, st, "x"))
			wantDials = append(wantDials, good.Addr())
			continue
		}
		assert.False(t, res.OK)
		assert.Equal(t, protocol.TargetBlocked, res.Reason, "stream %d: %+v", i, res)
		assert.Contains(t, res.Message, "127.0.0.2")
	}
	assert.Equal(t, wantDials, dials.Addrs(), "only checked addresses are dialled")
	assert.Equal(t, int32(streams/2), good.Accepted.Load())
	assert.Zero(t, bad.Accepted.Load(), "the blocked address never gets a connection")
}

func TestReportModeDialsWouldBeDenials(t *testing.T) {
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	d := dnstest.New(t, dnstest.NewZone(t, "new.test. 0 IN A 127.0.0.1").Reply)
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
mode: report
allow:
  - host: old.test
    ports: [443]
  - ip: 127.0.0.1
    ports: [%d]
`, relay.URL(), tg.Port()))
	logs := &testkit.LogSink{}
	dials := &testkit.DialLog{}
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	auditLog, err := audit.Open(auditPath, 0, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = auditLog.Close() }) // after the agent stopped
	serve(t, testServer{Config: cfg, Logger: logs.Logger(), Dial: dials.Dial, Audit: auditLog,
		Resolver: testkit.NewResolver(t, d.Addr(), -1)})
	s := relay.Session(t)

	req := testkit.DialRequest("new.test", tg.Port())
	res, st := s.Dial(t, req)
	require.True(t, res.OK, "report mode lets a would-be denial through: %+v", res)
	assert.Equal(t, "pong:report", testkit.Exchange(t, st, "report"))
	assert.Equal(t, int32(1), tg.Accepted.Load())
	warned := logs.Find("report mode: would deny")
	require.Len(t, warned, 1, "the would-be denial is logged")
	assert.Equal(t, string(protocol.AllowlistMissing), warned[0].Attrs["reason"])
	assert.Equal(t, "new.test:"+strconv.Itoa(tg.Port()), warned[0].Attrs["target"])

	bad := testkit.DialRequest("0x7f.0.0.1", tg.Port())
	res, _ = s.Dial(t, bad)
	assert.Equal(t, protocol.BadTarget, res.Reason, "a malformed target is refused even in report mode")
	assert.Equal(t, []string{tg.Addr()}, dials.Addrs())

	// The customer's audit log shows both: what report mode let through
	// and why enforce would not have.
	var entries []audit.Entry
	require.Eventually(t, func() bool {
		entries = readAudit(t, auditPath)
		return len(entries) == 2
	}, testkit.WaitTimeout, 10*time.Millisecond)
	byID := map[string]audit.Entry{entries[0].RequestID: entries[0], entries[1].RequestID: entries[1]}
	let := byID[req.ID]
	assert.Equal(t, audit.ReportAllowed, let.Decision)
	assert.Equal(t, string(protocol.AllowlistMissing), let.Reason)
	assert.Equal(t, "new.test:"+strconv.Itoa(tg.Port()), let.Target)
	assert.Equal(t, tg.Addr(), let.Addr)
	assert.Equal(t, int64(len("report")), let.BytesUp)
	assert.Equal(t, int64(len("pong:report")), let.BytesDown)
	refused := byID[bad.ID]
	assert.Equal(t, audit.Denied, refused.Decision)
	assert.Equal(t, string(protocol.BadTarget), refused.Reason)
}

// readAudit reads the JSON-lines audit log.
func readAudit(t *testing.T, path string) []audit.Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []audit.Entry
	for line := range strings.Lines(string(data)) {
		var e audit.Entry
		require.NoError(t, json.Unmarshal([]byte(line), &e), "audit line %q", line)
		out = append(out, e)
	}
	return out
}

// The target finishing first is propagated too: the relay sees EOF after
// the target's banner and can still send, and the target receives it.
func TestStreamHalfCloseFromTarget(t *testing.T) {
	got := make(chan string, 1)
	tg := testkit.NewTarget(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := io.WriteString(c, "banner"); err != nil {
			return
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.URL(), tg.Port()))
	serve(t, testServer{Config: cfg})
	s := relay.Session(t)

	res, st := s.Dial(t, testkit.DialRequest("127.0.0.1", tg.Port()))
	require.True(t, res.OK, "%+v", res)
	banner, err := io.ReadAll(st)
	require.NoError(t, err)
	assert.Equal(t, "banner", string(banner), "the relay sees the target's EOF")
	_, err = io.WriteString(st, "still open")
	require.NoError(t, err)
	require.NoError(t, st.Close())
	select {
	case msg := <-got:
		assert.Equal(t, "still open", msg)
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("the target never saw the relay's bytes and EOF")
	}
}
