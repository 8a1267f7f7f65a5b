package e2e

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// Names the test DNS server knows, each with the fault it produces.
const (
	dnsNameNXDomain = "nx.postern.test"       // NXDOMAIN
	dnsNameServFail = "servfail.postern.test" // SERVFAIL
	dnsNameTimeout  = "timeout.postern.test"  // the query is dropped, never answered
	dnsNameMetadata = "meta.postern.test"     // A 169.254.169.254 (a rebinding attempt)
)

// startFaultDNS serves DNS on a fresh UDP port of 127.0.0.1 with
// github.com/miekg/dns and returns its "ip:port". Each name of the
// dnsName* constants produces its fault; any other name is NXDOMAIN. The
// timeout name is read and dropped, so the asker sees a server that never
// answers. The server stops when the test ends.
func startFaultDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	started := make(chan struct{})
	srv := &dns.Server{
		PacketConn:        pc,
		Handler:           dns.HandlerFunc(faultDNSHandler),
		NotifyStartedFunc: func() { close(started) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		require.NoError(t, err, "test DNS server")
	case <-time.After(5 * time.Second):
		t.Fatal("test DNS server did not start within 5s")
	}
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown())
		<-served
	})
	return pc.LocalAddr().String()
}

func faultDNSHandler(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	switch strings.TrimSuffix(strings.ToLower(q.Name), ".") {
	case dnsNameTimeout:
		return // never answered
	case dnsNameServFail:
		m.Rcode = dns.RcodeServerFailure
	case dnsNameMetadata:
		m.Authoritative = true
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(169, 254, 169, 254).To4(),
			})
		}
	default:
		m.Authoritative = true
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
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
// is refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func portOf(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	require.NoError(t, err)
	_, err = strconv.Atoi(p)
	require.NoError(t, err)
	return p
}
