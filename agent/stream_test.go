package agent

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
	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// decisionEnv is one agent with a policy covering every decision a
// stream can get, the targets behind it and the DNS it asks.
type decisionEnv struct {
	session *tunneltest.RelaySession
	dials   *dialLog
	dns     *dnstest.Server
	ok      *target // 127.0.0.1:P, allowed
	loop    *target // 127.0.0.9:P, loopback no rule names
	unlist  *target // 127.0.0.1:Q, no rule allows port Q
	refused int     // 127.0.0.1:R, allowed, nothing listens
}

func newDecisionEnv(t *testing.T) *decisionEnv {
	t.Helper()
	env := &decisionEnv{dials: &dialLog{}}
	env.ok = newTarget(t, "127.0.0.1:0", replyAfterEOF)
	p := env.ok.port()
	env.loop = newTarget(t, net.JoinHostPort("127.0.0.9", strconv.Itoa(p)), replyAfterEOF)
	env.unlist = newTarget(t, "127.0.0.1:0", replyAfterEOF)
	env.refused = refusedPort(t)
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

	relay := newFakeRelay(t, time.Second)
	cfg := parseConfig(t, fmt.Sprintf(`relay_url: %s
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
	runAgent(t, Options{Config: cfg, Dial: env.dials.Dial, Resolver: newResolver(t, env.dns.Addr(), -1)})
	env.session = relay.Session(t)
	return env
}

func TestStreamDecisions(t *testing.T) {
	env := newDecisionEnv(t)
	p := env.ok.port()
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
		"name not allowlisted":        {host: "unlisted.example", port: env.unlist.port(), want: protocol.AllowlistMissing, noLookup: "unlisted.example."},
		"port not allowlisted":        {host: "ok.test", port: env.unlist.port(), want: protocol.AllowlistMissing, noLookup: "ok.test."},
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
			okBefore := env.ok.accepted.Load()
			lookupsBefore := len(env.dns.Queries().For(tc.noLookup, dns.TypeA))
			res, st := env.session.Dial(t, dialRequest(tc.host, tc.port))

			var dialled []string // nil when nothing was dialled
			if all := env.dials.Addrs(); len(all) > before {
				dialled = all[before:]
			}
			assert.Equal(t, tc.wantDials, dialled, "addresses dialled")
			assert.Zero(t, env.loop.accepted.Load(), "a blocked address is never reached")
			assert.Zero(t, env.unlist.accepted.Load(), "a target off the allowlist is never reached")
			if tc.noLookup != "" {
				assert.Len(t, env.dns.Queries().For(tc.noLookup, dns.TypeA), lookupsBefore, "no DNS question for %s", tc.noLookup)
			}
			if tc.want != "" {
				assert.False(t, res.OK)
				assert.Equal(t, tc.want, res.Reason, "%+v", res)
				assert.NotEmpty(t, res.Message)
				assert.Equal(t, okBefore, env.ok.accepted.Load())
				return
			}
			require.True(t, res.OK, "%+v", res)
			assert.Empty(t, res.Reason)
			assert.Equal(t, okAddr, res.Addr)
			assert.NotEmpty(t, res.Rule, "an ok names the rule that allowed it")
			// Half-close both ways: the target answers only after it saw
			// EOF, and the stream ends after the answer.
			assert.Equal(t, "pong:hello "+name, exchange(t, st, "hello "+name))
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
	unknownOp := dialRequest("127.0.0.1", env.ok.port())
	unknownOp.Op = "teleport"
	noPort := dialRequest("127.0.0.1", 0)
	longHost := dialRequest(strings.Repeat("a", protocol.MaxHostLen+1), 443)

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
	assert.Zero(t, env.ok.accepted.Load())
	assert.False(t, env.session.Closed(), "a bad stream does not end the tunnel")
}

// A DNS server that flips between an allowed and a blocked address with
// TTL 0 gets exactly one question per stream, and only the address that
// was checked is dialled.
func TestDNSRebindingNeverReachesBlockedAddress(t *testing.T) {
	good := newTarget(t, "127.0.0.1:0", replyAfterEOF)
	p := good.port()
	bad := newTarget(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(p)), replyAfterEOF)
	flip := [2]*dnstest.Zone{
		dnstest.NewZone(t, "rebind.test. 0 IN A 127.0.0.1"),
		dnstest.NewZone(t, "rebind.test. 0 IN A 127.0.0.2"),
	}
	d := dnstest.New(t, func(q dnstest.Query, req *dns.Msg) *dns.Msg {
		return flip[q.Seen%2].Reply(q, req) // allowed first, then blocked, and so on
	})
	relay := newFakeRelay(t, time.Second)
	cfg := parseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
allow:
  - host: rebind.test
    ports: [%[2]d]
  - ip: 127.0.0.1
    ports: [%[2]d]
`, relay.URL(), p))
	dials := &dialLog{}
	runAgent(t, Options{Config: cfg, Dial: dials.Dial, Resolver: newResolver(t, d.Addr(), 0)})
	s := relay.Session(t)

	const streams = 6
	var wantDials []string
	for i := range streams {
		res, st := s.Dial(t, dialRequest("rebind.test", p))
		assert.Len(t, d.Queries().For("rebind.test.", dns.TypeA), i+1, "exactly one resolution per stream")
		if i%2 == 0 {
			require.True(t, res.OK, "stream %d: %+v", i, res)
			assert.Equal(t, good.addr(), res.Addr)
			assert.Equal(t, "pong:x", exchange(t, st, "x"))
			wantDials = append(wantDials, good.addr())
			continue
		}
		assert.False(t, res.OK)
		assert.Equal(t, protocol.TargetBlocked, res.Reason, "stream %d: %+v", i, res)
		assert.Contains(t, res.Message, "127.0.0.2")
	}
	assert.Equal(t, wantDials, dials.Addrs(), "only checked addresses are dialled")
	assert.Equal(t, int32(streams/2), good.accepted.Load())
	assert.Zero(t, bad.accepted.Load(), "the blocked address never gets a connection")
}

func TestReportModeDialsWouldBeDenials(t *testing.T) {
	tg := newTarget(t, "127.0.0.1:0", replyAfterEOF)
	d := dnstest.New(t, dnstest.NewZone(t, "new.test. 0 IN A 127.0.0.1").Reply)
	relay := newFakeRelay(t, time.Second)
	cfg := parseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
mode: report
allow:
  - host: old.test
    ports: [443]
  - ip: 127.0.0.1
    ports: [%d]
`, relay.URL(), tg.port()))
	logs := &logSink{}
	dials := &dialLog{}
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	auditLog, err := audit.Open(auditPath, 0, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = auditLog.Close() }) // after the agent stopped
	runAgent(t, Options{Config: cfg, Logger: logs.Logger(), Dial: dials.Dial, Audit: auditLog,
		Resolver: newResolver(t, d.Addr(), -1)})
	s := relay.Session(t)

	req := dialRequest("new.test", tg.port())
	res, st := s.Dial(t, req)
	require.True(t, res.OK, "report mode lets a would-be denial through: %+v", res)
	assert.Equal(t, "pong:report", exchange(t, st, "report"))
	assert.Equal(t, int32(1), tg.accepted.Load())
	warned := logs.Find("report mode: would deny")
	require.Len(t, warned, 1, "the would-be denial is logged")
	assert.Equal(t, string(protocol.AllowlistMissing), warned[0].Attrs["reason"])
	assert.Equal(t, "new.test:"+strconv.Itoa(tg.port()), warned[0].Attrs["target"])

	bad := dialRequest("0x7f.0.0.1", tg.port())
	res, _ = s.Dial(t, bad)
	assert.Equal(t, protocol.BadTarget, res.Reason, "a malformed target is refused even in report mode")
	assert.Equal(t, []string{tg.addr()}, dials.Addrs())

	// The customer's audit log shows both: what report mode let through
	// and why enforce would not have.
	var entries []audit.Entry
	require.Eventually(t, func() bool {
		entries = readAudit(t, auditPath)
		return len(entries) == 2
	}, waitTimeout, 10*time.Millisecond)
	byID := map[string]audit.Entry{entries[0].RequestID: entries[0], entries[1].RequestID: entries[1]}
	let := byID[req.ID]
	assert.Equal(t, audit.ReportAllowed, let.Decision)
	assert.Equal(t, string(protocol.AllowlistMissing), let.Reason)
	assert.Equal(t, "new.test:"+strconv.Itoa(tg.port()), let.Target)
	assert.Equal(t, tg.addr(), let.Addr)
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
	tg := newTarget(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := io.WriteString(c, "banner"); err != nil {
			return
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	relay := newFakeRelay(t, time.Second)
	cfg := parseConfig(t, fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - ip: 127.0.0.1\n    ports: [%d]\n",
		relay.URL(), tg.port()))
	runAgent(t, Options{Config: cfg})
	s := relay.Session(t)

	res, st := s.Dial(t, dialRequest("127.0.0.1", tg.port()))
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
	case <-time.After(waitTimeout):
		t.Fatal("the target never saw the relay's bytes and EOF")
	}
}
