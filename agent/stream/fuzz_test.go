package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// nxResolver answers every name with NXDOMAIN, without any network.
type nxResolver struct{}

func (nxResolver) Lookup(context.Context, string) ([]netip.Addr, resolve.Answer, error) {
	return nil, resolve.Answer{}, fmt.Errorf("lookup: %w", resolve.ErrNXDomain)
}

// FuzzServeStream feeds arbitrary bytes to the agent as the start of a
// relay-opened stream. Whatever arrives, the agent answers exactly one
// well-formed result frame with a known reason, and it never dials an
// address its allowlist does not allow.
func FuzzServeStream(f *testing.F) {
	frame := func(req protocol.Request) []byte {
		b, err := protocol.AppendFrame(nil, protocol.FrameRequest, req)
		require.NoError(f, err)
		return b
	}
	deadline := time.Now().Add(time.Hour).UnixMilli()
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "1", Host: "10.0.0.7", Port: 8080, DeadlineUnixMS: deadline}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "2", Host: "[::ffff:10.0.0.7]", Port: 8080}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "3", Host: "10.0.0.7", Port: 8081}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "4", Host: "gitlab.corp.example", Port: 443}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "5", Host: "169.254.169.254", Port: 80}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "6", Host: "0x0a.0.0.7", Port: 8080}))
	f.Add(frame(protocol.Request{Op: "teleport", ID: "7", Host: "10.0.0.7", Port: 8080}))
	f.Add(frame(protocol.Request{Op: protocol.OpDial, ID: "8", Host: "10.0.0.7", Port: 8080, DeadlineUnixMS: 1}))
	f.Add([]byte{0, 0, 0, 5, byte(protocol.FrameRequest), '{', '}'})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	var badDial atomic.Value // the first disallowed address dialled, if any
	allowed := netip.MustParseAddrPort("10.0.0.7:8080")
	cfg := testkit.ParseConfig(f, `relay_url: ws://127.0.0.1:1
allow:
  - ip: 10.0.0.7
    ports: [8080]
  - host: "*.corp.example"
    ports: [443]
`)
	srv, err := New(Config{
		Gate:        policy.NewGate(policy.New(cfg, time.Now()), nxResolver{}),
		OpenTimeout: 15 * time.Second,
		IdleTimeout: 15 * time.Minute,
		Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
			if ap, err := netip.ParseAddrPort(addr); err != nil || netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != allowed {
				badDial.CompareAndSwap(nil, addr)
			}
			return nil, errors.New("connect: connection refused by the test")
		},
	})
	require.NoError(f, err)

	relayEnd, agentEnd := net.Pipe()
	quiet := tunnel.DefaultConfig()
	quiet.KeepAlive = false
	relayMux, err := tunnel.Server(relayEnd, quiet)
	require.NoError(f, err)
	agentMux, err := tunnel.Client(agentEnd, quiet)
	require.NoError(f, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := agentMux.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				if rest := srv.ServeStream(ctx, st, slog.New(slog.DiscardHandler)); rest != nil {
					rest()
				}
			})
		}
	})
	f.Cleanup(func() {
		cancel()
		_ = relayMux.Close()
		_ = agentMux.Close()
		wg.Wait()
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > protocol.MaxStreamFrame+8 {
			t.Skip("larger than one stream frame plus change; the cap is tested by seeds")
		}
		st, err := relayMux.Open(t.Context())
		require.NoError(t, err)
		defer st.Close()
		require.NoError(t, st.SetDeadline(time.Now().Add(testkit.WaitTimeout)))
		_, err = st.Write(data)
		require.NoError(t, err)
		require.NoError(t, st.CloseWrite()) // the agent sees EOF after data
		res, err := protocol.ReadResult(st)
		require.NoError(t, err, "the agent always answers one result frame")
		if res.Check != nil {
			// A check that ran answers ok with its own verdict.
			require.True(t, res.OK)
			require.False(t, res.Check.Ready, "nothing in this setup is reachable")
			require.True(t, res.Check.Reason.Known(), "check reason %q", res.Check.Reason)
		} else {
			require.False(t, res.OK, "nothing in this setup can be dialled")
			require.True(t, res.Reason.Known(), "reason %q", res.Reason)
		}
		rest, err := io.ReadAll(st)
		require.NoError(t, err)
		require.Empty(t, rest, "nothing follows a refusal")
		require.Nil(t, badDial.Load(), "the agent dialled an address the allowlist does not allow")
	})
}
