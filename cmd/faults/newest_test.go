package faults

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// forwarder is a TCP relay on loopback whose current connections can be
// frozen: from then on it forwards nothing either way and closes nothing,
// like a path whose NAT state was lost. Connections made after a freeze
// are forwarded normally.
type forwarder struct {
	addr string
	mu   sync.Mutex
	// pairs are the connections being forwarded or held frozen.
	pairs [][2]net.Conn
	wg    sync.WaitGroup
}

func newForwarder(t *testing.T, upstream string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &forwarder{addr: ln.Addr().String()}
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for _, p := range f.pairs {
			_ = p[0].Close()
			_ = p[1].Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	f.wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				_ = down.Close()
				continue
			}
			f.mu.Lock()
			f.pairs = append(f.pairs, [2]net.Conn{down, up})
			f.mu.Unlock()
			f.wg.Go(func() { pump(up, down) })
			f.wg.Go(func() { pump(down, up) })
		}
	})
	return f
}

// pump copies src to dst. A frozen pair's read deadline stops it without
// closing anything; any other end closes both.
func pump(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	_ = dst.Close()
	_ = src.Close()
}

// freeze stops forwarding on every current connection and keeps them
// open.
func (f *forwarder) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	past := time.Unix(1, 0)
	for _, p := range f.pairs {
		_ = p[0].SetReadDeadline(past)
		_ = p[1].SetReadDeadline(past)
	}
}

// When an agent comes back while the relay still holds its tunnels from
// before (the old path went silent without closing), the newest session
// of that agent wins and the old ones are closed at once, not after the
// keepalive gives up on them.
func TestFaultNewestSessionWins(t *testing.T) {
	s := newSystem(t)
	f := newForwarder(t, s.relay.apiAddr)
	old := s.startAgent(t, agentOptions{relays: []string{f.addr}})
	f.freeze()
	old.Kill() // the old machine is gone; its tunnels' FIN never reaches the relay

	frozeAt := time.Now()
	fresh := s.launchAgent(t, agentOptions{})
	testkit.WaitFor(t, 10*time.Second, "the new agent is up", func() bool { return fresh.tunnelsUp() == 2 })
	st := s.relay.status(t, s.connID)
	assert.Equal(t, 2, agentTunnels(st), "only the new agent's tunnels remain (%s after the old path froze)", time.Since(frozeAt).Round(time.Millisecond))
	require.Len(t, st.Agents, 1)
	// Streams go to the live tunnels only; one sent to a silent old
	// tunnel would wait for the relay's open timeout (15 s).
	for i := range 8 {
		assert.NoError(t, s.roundTrip(4<<10, 5*time.Second), "stream %d", i)
	}
	lingered := testkit.WaitFor(t, 20*time.Second, "old tunnels gone from the relay", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && agentTunnels(st) == 2
	})
	t.Logf("newest session wins: old tunnels lingered %s after the new agent was up", lingered.Round(time.Millisecond))
}
