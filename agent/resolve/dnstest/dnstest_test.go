package dnstest_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/postern/postern/agent/resolve/dnstest"
)

// Cleanup must stop every server goroutine, or each test using the package would leak.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ask sends one question and returns the reply, or nil after a timeout.
func ask(t *testing.T, srv *dnstest.Server, proto, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	c := &dns.Client{Net: proto, Timeout: 200 * time.Millisecond}
	resp, _, err := c.Exchange(req, srv.Addr())
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	require.NoError(t, err)
	return resp
}

func TestZone(t *testing.T) {
	z := dnstest.NewZone(t,
		"www.corp.example. 120 IN CNAME jira.corp.example.",
		"jira.corp.example. 60 IN A 10.0.0.1",
		"jira.corp.example. 60 IN AAAA fd00::1",
		"mail.corp.example. 60 IN MX 10 mx.corp.example.",
	)
	z.SOAMinimum = 30
	srv := dnstest.New(t, z.Reply)
	tests := map[string]struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		soa    bool
	}{
		"a":           {name: "JIRA.corp.example.", qtype: dns.TypeA, answer: []string{"jira.corp.example.\t60\tIN\tA\t10.0.0.1"}},
		"aaaa":        {name: "jira.corp.example.", qtype: dns.TypeAAAA, answer: []string{"jira.corp.example.\t60\tIN\tAAAA\tfd00::1"}},
		"cname chain": {name: "www.corp.example.", qtype: dns.TypeA, answer: []string{"www.corp.example.\t120\tIN\tCNAME\tjira.corp.example.", "jira.corp.example.\t60\tIN\tA\t10.0.0.1"}},
		"nodata":      {name: "mail.corp.example.", qtype: dns.TypeA, soa: true},
		"nxdomain":    {name: "gone.corp.example.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp := ask(t, srv, "udp", tc.name, tc.qtype)
			require.NotNil(t, resp)
			assert.Equal(t, tc.rcode, resp.Rcode)
			var answer []string
			for _, rr := range resp.Answer {
				answer = append(answer, rr.String())
			}
			assert.Equal(t, tc.answer, answer)
			if !tc.soa {
				assert.Empty(t, resp.Ns)
				return
			}
			require.Len(t, resp.Ns, 1)
			assert.Equal(t, uint32(30), resp.Ns[0].(*dns.SOA).Minttl)
		})
	}
}

func TestHandlers(t *testing.T) {
	z := dnstest.NewZone(t, "big.corp.example. 60 IN A 10.0.0.1")
	srv := dnstest.New(t, dnstest.ByName(map[string]dnstest.Handler{
		"Broken.corp.example": dnstest.Rcode(dns.RcodeServerFailure),
		"slow.corp.example.":  dnstest.Drop,
	}, dnstest.TruncateUDP(dns.TypeA, z.Reply)))

	assert.Equal(t, dns.RcodeServerFailure, ask(t, srv, "udp", "broken.corp.example.", dns.TypeA).Rcode)
	assert.Nil(t, ask(t, srv, "udp", "slow.corp.example.", dns.TypeA), "dropped")
	udp := ask(t, srv, "udp", "big.corp.example.", dns.TypeA)
	assert.True(t, udp.Truncated)
	assert.Empty(t, udp.Answer)
	tcp := ask(t, srv, "tcp", "big.corp.example.", dns.TypeA)
	assert.False(t, tcp.Truncated)
	assert.Len(t, tcp.Answer, 1)
	assert.False(t, ask(t, srv, "udp", "big.corp.example.", dns.TypeAAAA).Truncated, "only A is truncated")

	assert.Equal(t, []string{
		"broken.corp.example. A udp", "slow.corp.example. A udp",
		"big.corp.example. A udp", "big.corp.example. A tcp", "big.corp.example. AAAA udp",
	}, srv.Queries().Strings())
	big := srv.Queries().For("BIG.corp.example", dns.TypeA)
	require.Len(t, big, 2)
	assert.Equal(t, []int{0, 1}, []int{big[0].Seen, big[1].Seen}, "Seen counts over both protocols")
	assert.Equal(t, []string{"big.corp.example. A tcp"}, srv.Queries().Over("tcp").Strings())
	assert.Len(t, srv.Queries().For("", dns.TypeA), 4)
	assert.Nil(t, srv.Queries().For("none.example.", 0).Strings())
}

func TestSilent(t *testing.T) {
	srv := dnstest.Silent(t)
	assert.Nil(t, ask(t, srv, "udp", "jira.corp.example.", dns.TypeA))
	assert.Equal(t, []string{"jira.corp.example. A udp"}, srv.Queries().Strings())
}

func TestNewRawSendsEveryDatagramInOrder(t *testing.T) {
	srv := dnstest.NewRaw(t, func(_ dnstest.Query, req *dns.Msg) [][]byte {
		forged := new(dns.Msg)
		forged.SetRcode(req, dns.RcodeServerFailure)
		forged.Id = req.Id + 1
		real := new(dns.Msg)
		real.SetRcode(req, dns.RcodeRefused)
		return [][]byte{[]byte("garbage"), dnstest.Pack(t, forged), dnstest.Pack(t, real)}
	})
	conn, err := net.Dial("udp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	req := new(dns.Msg)
	req.SetQuestion("jira.corp.example.", dns.TypeA)
	_, err = conn.Write(dnstest.Pack(t, req))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
	buf := make([]byte, dns.MaxMsgSize)
	var got []string
	for range 3 {
		n, err := conn.Read(buf)
		require.NoError(t, err)
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil {
			got = append(got, "garbage")
			continue
		}
		got = append(got, dns.RcodeToString[m.Rcode])
	}
	assert.Equal(t, []string{"garbage", "SERVFAIL", "REFUSED"}, got)
}
