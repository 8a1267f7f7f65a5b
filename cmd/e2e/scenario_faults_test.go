package e2e

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/resolve/dnstest"
	"github.com/postern/postern/cmd/internal/testkit"
)

// Names the test DNS server knows, each with the fault it produces.
const (
	dnsNameNXDomain = "nx.postern.test"       // NXDOMAIN
	dnsNameServFail = "servfail.postern.test" // SERVFAIL
	dnsNameTimeout  = "timeout.postern.test"  // the query is dropped, never answered
	dnsNameMetadata = "meta.postern.test"     // A 169.254.169.254 (a rebinding attempt)
)

// startFaultDNS serves DNS on 127.0.0.1 (dnstest, UDP and TCP) and returns
// its "ip:port". Each name of the dnsName* constants produces its fault; any
// other name is NXDOMAIN. The timeout name is read and dropped, so the asker
// sees a server that never answers. The server stops when the test ends.
func startFaultDNS(t *testing.T) string {
	t.Helper()
	zone := dnstest.NewZone(t, dns.Fqdn(dnsNameMetadata)+" 60 IN A 169.254.169.254")
	return dnstest.New(t, dnstest.ByName(map[string]dnstest.Handler{
		dnsNameTimeout:  dnstest.Drop,
		dnsNameServFail: dnstest.Rcode(dns.RcodeServerFailure),
	}, zone.Reply)).Addr()
}

// blackHole returns a loopback host:port whose TCP connects time out: a
// socket listening with a backlog of zero that never accepts. Once its
// accept queue holds a connection, the kernel drops further SYNs, so a
// connect waits for an answer that never comes, exactly like a target
// behind a firewall that drops packets. Everything is closed when the test
// ends.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port)).String()

	// Fill the accept queue until a connect times out: from then on the
	// address is a black hole.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout(), "connect to a full accept queue should time out, got %v", err)
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatalf("%s still accepts connections after its queue was filled; no black hole on this kernel", addr)
	return ""
}

// closedPort returns a loopback host:port nothing listens on, so a connect
// is refused: one that was free a moment ago.
func closedPort(t *testing.T) string {
	t.Helper()
	return testkit.FreeAddr(t)
}

func portOf(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	require.NoError(t, err)
	_, err = strconv.Atoi(p)
	require.NoError(t, err)
	return p
}
