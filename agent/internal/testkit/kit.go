package testkit

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// Token is the agent token every fake relay of these tests expects.
const Token = "pst_tok123_s3cr3t"

// WaitTimeout bounds every wait in the agent's tests; nothing legitimate
// takes this long, so hitting it means a hang.
const WaitTimeout = 5 * time.Second

// ParseConfig parses an agent config written in the test.
func ParseConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("agent.yaml", []byte(yaml), nil)
	require.NoError(t, err)
	return cfg
}

// Hosts is the hosts file of NewResolver: a name answered without DNS.
const Hosts = "127.0.0.1\thostsfile.test\n"

// NewResolver returns a resolver asking only server, with no search list
// and the hosts file Hosts instead of the machine's. maxTTL 0 keeps the
// default cache; negative disables it.
func NewResolver(t testing.TB, server string, maxTTL time.Duration) *resolve.Resolver {
	t.Helper()
	dir := t.TempDir()
	resolvConf, hosts := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(resolvConf, []byte("options ndots:1\n"), 0o644))
	require.NoError(t, os.WriteFile(hosts, []byte(Hosts), 0o644))
	r, err := resolve.New(resolve.Config{
		Servers:     []string{server},
		Timeout:     150 * time.Millisecond,
		Attempts:    1,
		ResolvConf:  resolvConf,
		HostsFile:   hosts,
		MaxTTL:      maxTTL,
		NegativeTTL: -1,
	})
	require.NoError(t, err)
	return r
}

// DialLog is a dial function that records every address dialled.
type DialLog struct {
	// To, when set, is the loopback address every dial connects to
	// instead of the one asked for: it stands in for the customer network,
	// so a test can use a private network's addresses without sending a
	// packet to one.
	To string

	mu    sync.Mutex
	addrs []string
}

// Dial records addr and dials it (or To).
func (l *DialLog) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	l.mu.Lock()
	l.addrs = append(l.addrs, addr)
	l.mu.Unlock()
	if l.To != "" {
		addr = l.To
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Addrs returns the addresses dialled so far, in order.
func (l *DialLog) Addrs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.addrs)
}

// Target is a TCP service inside the "customer network": a real loopback
// listener that counts the connections it accepts.
type Target struct {
	Accepted atomic.Int32
	Ended    atomic.Int32 // connections whose handler finished

	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewTarget listens on addr ("127.0.0.1:0" or a fixed address) and serves
// every connection with handle until the test ends.
func NewTarget(t testing.TB, addr string, handle func(net.Conn)) *Target {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	tg := &Target{ln: ln}
	tg.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.Accepted.Add(1)
			tg.mu.Lock()
			tg.conns = append(tg.conns, c)
			tg.mu.Unlock()
			tg.wg.Go(func() {
				defer tg.Ended.Add(1)
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		tg.mu.Lock()
		for _, c := range tg.conns {
			_ = c.Close()
		}
		tg.mu.Unlock()
		tg.wg.Wait()
	})
	return tg
}

// Port is the target's TCP port.
func (tg *Target) Port() int { return tg.ln.Addr().(*net.TCPAddr).Port }

// Addr is the target's ip:port.
func (tg *Target) Addr() string { return tg.ln.Addr().String() }

// ReplyAfterEOF answers "pong:" and everything it read, but only once the
// client has finished writing: it proves half-close reaches the target.
func ReplyAfterEOF(c net.Conn) {
	got, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = io.WriteString(c, "pong:"+string(got))
}

// Echo copies everything back until the client closes.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// RefusedPort returns a loopback port nothing listens on.
func RefusedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// NewRelay starts a fake relay that accepts Token and asks for Health
// every heartbeat.
func NewRelay(t testing.TB, heartbeat time.Duration) *tunneltest.Relay {
	t.Helper()
	return tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: Token, Heartbeat: heartbeat})
}

var requestSeq atomic.Int64

// NextID returns a request id unique in the test binary: prefix-N.
func NextID(prefix string) string {
	return prefix + "-" + strconv.FormatInt(requestSeq.Add(1), 10)
}

// DialRequest is a dial request with a deadline, the way the relay sends one.
func DialRequest(host string, port int) protocol.Request {
	return protocol.Request{
		Op:             protocol.OpDial,
		ID:             NextID("req"),
		Host:           host,
		Port:           port,
		DeadlineUnixMS: time.Now().Add(WaitTimeout).UnixMilli(),
	}
}

// Exchange writes msg on a dialled stream, half-closes it and returns
// everything read until the agent closes its side.
func Exchange(t testing.TB, st *tunnel.Stream, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	require.NoError(t, st.CloseWrite())
	got, err := io.ReadAll(st)
	require.NoError(t, err)
	return string(got)
}

// RoundTrip writes msg and reads len(msg) bytes back, leaving the stream
// open.
func RoundTrip(t testing.TB, st net.Conn, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(st, buf)
	require.NoError(t, err)
	return string(buf)
}
