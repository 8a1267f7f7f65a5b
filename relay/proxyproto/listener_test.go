package proxyproto

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseTrusted(t *testing.T) {
	got, err := ParseTrusted([]string{"10.0.0.0/8", " 192.0.2.10 ", "2001:db8::/32", "10.1.2.3/8", "::ffff:198.51.100.1"})
	require.NoError(t, err)
	assert.Equal(t, Trusted{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.10/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("198.51.100.1/32"),
	}, got)

	_, err = ParseTrusted([]string{"10.0.0.0/33", "lb.internal", "fe80::1%eth0", "10.0.0.1"})
	require.Error(t, err)
	for _, bad := range []string{`"10.0.0.0/33"`, `"lb.internal"`, `"fe80::1%eth0"`} {
		assert.Contains(t, err.Error(), bad, "every bad entry is named")
	}
	assert.NotContains(t, err.Error(), `"10.0.0.1"`)
}

func TestTrustedContains(t *testing.T) {
	tr, err := ParseTrusted([]string{"127.0.0.0/8", "2001:db8::/32"})
	require.NoError(t, err)
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	assert.True(t, tr.Contains(tcp("127.0.0.1:5")))
	assert.True(t, tr.Contains(tcp("[::ffff:127.0.0.9]:5")), "IPv4 in IPv6 is judged as IPv4")
	assert.True(t, tr.Contains(tcp("[2001:db8::9]:5")))
	assert.False(t, tr.Contains(tcp("192.0.2.1:5")))
	assert.False(t, tr.Contains(&net.UnixAddr{Name: "/tmp/x", Net: "unix"}), "only TCP peers can be trusted")
	assert.False(t, Trusted(nil).Contains(tcp("127.0.0.1:5")), "an empty list trusts no one")
}

// serveOne accepts one connection from l and reports its RemoteAddr and
// everything it read after the header (or the read's error).
type served struct {
	remote string
	data   []byte
	err    error
}

func serveOne(t *testing.T, l net.Listener) <-chan served {
	t.Helper()
	out := make(chan served, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			out <- served{err: err}
			return
		}
		defer c.Close()
		remote := c.RemoteAddr().String()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		data, err := io.ReadAll(c)
		out <- served{remote: remote, data: data, err: err}
	}()
	return out
}

func listen(t *testing.T, trusted ...string) *Listener {
	t.Helper()
	tr, err := ParseTrusted(trusted)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := NewListener(ln, tr, 500*time.Millisecond, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// send dials l, writes b, half-closes and returns the server's view.
func send(t *testing.T, l net.Listener, b []byte) served {
	t.Helper()
	got := serveOne(t, l)
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(b)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the server never finished reading")
		return served{}
	}
}

func TestListener(t *testing.T) {
	client := netip.MustParseAddrPort("203.0.113.7:51234")
	front := netip.MustParseAddrPort("192.0.2.1:443")
	const payload = "GET /healthz HTTP/1.1\r\n\r\n"
	tests := map[string]struct {
		trusted    []string
		in         []byte
		wantRemote string // "" = the connection's own loopback address
		wantData   string
		wantErr    bool
	}{
		"v1 from a trusted proxy": {[]string{"127.0.0.0/8"}, AppendV1(nil, client, front), client.String(), payload, false},
		"v2 from a trusted proxy": {[]string{"127.0.0.1"}, AppendV2(nil, client, front, nil), client.String(), payload, false},
		"v2 local health check":   {[]string{"127.0.0.1"}, []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"), "", payload, false},
		"trusted without header":  {[]string{"127.0.0.1"}, nil, "", "", true},
		"trusted, bad header":     {[]string{"127.0.0.1"}, []byte("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), "", "", true},
		"untrusted sends v1":      {[]string{"192.0.2.0/24"}, AppendV1(nil, client, front), "", string(AppendV1(nil, client, front)) + payload, false},
		"untrusted sends v2":      {nil, AppendV2(nil, client, front, nil), "", string(AppendV2(nil, client, front, nil)) + payload, false},
		"untrusted, plain":        {nil, nil, "", payload, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l := listen(t, tc.trusted...)
			s := send(t, l, append(bytes.Clone(tc.in), payload...))
			if tc.wantRemote == "" {
				host, _, err := net.SplitHostPort(s.remote)
				require.NoError(t, err)
				assert.Equal(t, "127.0.0.1", host)
			} else {
				assert.Equal(t, tc.wantRemote, s.remote)
			}
			if tc.wantErr {
				require.Error(t, s.err)
				assert.Empty(t, s.data, "nothing is read from a connection whose header was refused")
				return
			}
			require.NoError(t, s.err)
			assert.Equal(t, tc.wantData, string(s.data))
		})
	}
}

// A trusted peer that sends part of a header and stalls is cut off at
// the timeout; Accept is never held up meanwhile.
func TestListenerHeaderTimeout(t *testing.T) {
	l := listen(t, "127.0.0.1")
	got := serveOne(t, l)
	stalled, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer stalled.Close()
	_, err = stalled.Write([]byte("PROXY TCP4 1.2.3.4"))
	require.NoError(t, err)

	start := time.Now()
	s := <-got
	require.Error(t, s.err)
	assert.ErrorIs(t, s.err, ErrInvalid)
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 400*time.Millisecond)
	assert.Less(t, took, 3*time.Second, "the header read is bounded")

	// A second connection is accepted while a first one stalls.
	l2 := listen(t, "127.0.0.1")
	first, err := net.Dial("tcp", l2.Addr().String())
	require.NoError(t, err)
	defer first.Close()
	c1, err := l2.Accept()
	require.NoError(t, err)
	defer c1.Close()
	s2 := send(t, l2, AppendV1(nil, netip.MustParseAddrPort("198.51.100.4:1"), netip.MustParseAddrPort("192.0.2.1:2")))
	require.NoError(t, s2.err)
	assert.Equal(t, "198.51.100.4:1", s2.remote)
}
