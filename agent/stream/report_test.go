package stream

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/protocol"
)

// Report mode lifts only "no allow rule covers this": an unsafe address,
// a deny rule, and an address the lookup returned that either refuses are
// refused as in enforce mode. Each refusal is checked where it counts: a
// real listener on the refused address never accepts a connection, and
// the agent never dials it.
func TestReportModeNeverDialsAnUnsafeAddress(t *testing.T) {
	ok := testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	p := ok.Port()
	// Loopback that no rule names exactly: always blocked.
	unsafe := testkit.NewTarget(t, net.JoinHostPort("127.0.0.9", strconv.Itoa(p)), testkit.ReplyAfterEOF)
	// Allowed exactly, and refused by a deny rule on the same port.
	denied := testkit.NewTarget(t, "127.0.0.1:0", testkit.ReplyAfterEOF)
	d := dnstest.New(t, dnstest.NewZone(t,
		"new.example. 0 IN A 127.0.0.1",  // no allow rule names it; its address passes
		"loop.test. 0 IN A 127.0.0.9",    // allowed name, unsafe address
		"loop.example. 0 IN A 127.0.0.9", // neither
		"mapped.example. 0 IN AAAA ::ffff:127.0.0.9",
		"alias.test. 0 IN CNAME secret.test.", // an allowed name leading to a denied one
		"secret.test. 0 IN A 127.0.0.1",
	).Reply)
	relay := testkit.NewRelay(t, time.Second)
	cfg := testkit.ParseConfig(t, fmt.Sprintf(`relay_url: %s
tunnels: 1
mode: report
allow:
  - host: "*.test"
    ports: [%[2]d]
  - ip: 127.0.0.1
    ports: [%[2]d, %[3]d]
deny:
  - host: secret.test
  - ip: 127.0.0.1
    ports: [%[3]d]
`, relay.URL(), p, denied.Port()))
	dials := &testkit.DialLog{}
	serve(t, testServer{Config: cfg, Dial: dials.Dial, Resolver: testkit.NewResolver(t, d.Addr(), -1)})
	s := relay.Session(t)

	refused := map[string]struct {
		host string
		port int
		rule string
	}{
		"loopback literal":                     {"127.0.0.9", p, "always-blocked loopback"},
		"ipv4-mapped loopback literal":         {"[::ffff:127.0.0.9]", p, "always-blocked loopback"},
		"metadata literal":                     {"169.254.169.254", 80, "always-blocked link-local"},
		"deny rule literal":                    {"127.0.0.1", denied.Port(), "deny ip=127.0.0.1 ports=" + strconv.Itoa(denied.Port())},
		"allowed name resolving to loopback":   {"loop.test", p, "allow host=*.test ports=" + strconv.Itoa(p)},
		"unlisted name resolving to loopback":  {"loop.example", p, ""},
		"unlisted name resolving to mapped":    {"mapped.example", p, ""},
		"allowed name aliasing a denied name":  {"alias.test", p, "deny host=secret.test ports=*"},
		"unlisted name resolving to deny rule": {"new.example", denied.Port(), ""},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			res, _ := s.Dial(t, testkit.DialRequest(tc.host, tc.port))
			assert.False(t, res.OK, "%+v", res)
			assert.Equal(t, protocol.TargetBlocked, res.Reason, "%+v", res)
			assert.NotEmpty(t, res.Message)
			if tc.rule != "" {
				assert.Equal(t, tc.rule, res.Rule)
			}
		})
	}
	assert.Zero(t, unsafe.Accepted.Load(), "the unsafe address is never reached in report mode")
	assert.Zero(t, denied.Accepted.Load(), "the denied address is never reached in report mode")
	assert.Zero(t, ok.Accepted.Load())
	for _, addr := range dials.Addrs() {
		assert.NotEqual(t, unsafe.Addr(), addr, "the unsafe address is never dialled")
		assert.NotEqual(t, denied.Addr(), addr, "the denied address is never dialled")
	}

	// What report mode is for: a target no allow rule covers, at an
	// address that passes every check, is let through.
	res, st := s.Dial(t, testkit.DialRequest("new.example", p))
	require.True(t, res.OK, "report mode lets ALLOWLIST_MISSING through: %+v", res)
	assert.Equal(t, ok.Addr(), res.Addr)
	assert.Equal(t, "pong:x", testkit.Exchange(t, st, "x"))
	assert.Equal(t, int32(1), ok.Accepted.Load())
	assert.Zero(t, unsafe.Accepted.Load())
}
