package faults

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// rssBound is the most memory either binary may hold under the faults of
// this package; the bench measured 50-60 MiB at full speed.
const rssBound = 200 << 10 // KiB

// usageSampler records the peak usage of the relay and the agent while a
// fault is on.
type usageSampler struct {
	mu               sync.Mutex
	relayMax, agtMax testkit.Usage
	stop             func()
}

func sampleUsage(t *testing.T, relay, agent *testkit.Process) *usageSampler {
	t.Helper()
	u := &usageSampler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			r, rerr := relay.Usage()
			a, aerr := agent.Usage()
			u.mu.Lock()
			if rerr == nil && r.RSSKiB > u.relayMax.RSSKiB {
				u.relayMax = r
			}
			if aerr == nil && a.RSSKiB > u.agtMax.RSSKiB {
				u.agtMax = a
			}
			u.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	u.stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(u.stop)
	return u
}

func (u *usageSampler) peaks() (relay, agent testkit.Usage) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.relayMax, u.agtMax
}

// A target that reads nothing while a client tries to push 100 MB at it:
// the push stalls after what the windows and socket buffers hold, relay
// and agent memory stay bounded, and another stream on the same tunnel
// keeps flowing meanwhile.
func TestFaultSlowReader(t *testing.T) {
	s := newSystem(t)
	// The target's close ends the stuck stream before the processes stop.
	defer s.sink.closeAll()
	a := s.startAgent(t, agentOptions{tunnels: 1})
	samples := sampleUsage(t, s.relay.Process, a.Process)

	stuck, err := s.connect(s.sink.addr, 10*time.Second)
	require.NoError(t, err)
	defer stuck.Close()
	const push = 100 << 20
	var pushed atomic.Int64
	pushDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		_, _ = testkit.NewPattern(1).Read(buf)
		for pushed.Load() < push {
			// A write that makes no progress for 3 s means the path is
			// full: the push has stalled, as it should.
			_ = stuck.SetWriteDeadline(time.Now().Add(3 * time.Second))
			n, err := stuck.Write(buf)
			pushed.Add(int64(n))
			if err != nil {
				pushDone <- err
				return
			}
		}
		pushDone <- nil
	}()

	// While the stuck stream fills its window, another stream on the
	// same tunnel carries 8 MiB both ways.
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	require.NoError(t, s.roundTrip(8<<20, 30*time.Second), "a stream beside the stuck one")
	beside := time.Since(start)

	require.Error(t, <-pushDone, "the push stalls: nobody reads it")
	stalledAt := pushed.Load()
	assert.Less(t, stalledAt, int64(64<<20), "backpressure reaches the client; nothing buffers the whole push")
	// The stuck stream still holds its window; streams keep flowing.
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second), "a stream after the push stalled")

	samples.stop()
	relayPeak, agentPeak := samples.peaks()
	assert.Less(t, relayPeak.RSSKiB, int64(rssBound), "relay RSS")
	assert.Less(t, agentPeak.RSSKiB, int64(rssBound), "agent RSS")

	t.Logf("slow reader: push stalled after %.1f MiB of 100 MB; a stream beside it moved 8 MiB both ways in %s; peak relay %s, agent %s",
		float64(stalledAt)/(1<<20), beside.Round(time.Millisecond), relayPeak, agentPeak)
}

// A target that resets its connection while the client is still
// uploading: the client's stream must end, and the relay must release it,
// within seconds.
func TestFaultTargetResetDuringUpload(t *testing.T) {
	// The agent's splice fails on the target's reset and resets the
	// tunnel stream; the relay's copy from the client, waiting in
	// Stream.Write for window the agent will never grant, fails at once
	// and the relay frees the stream's slot and the client's connection.
	// With a half-close instead (a Close sends only FIN) it waited for
	// SpliceWriteTimeout, 2 min.
	s := newSystem(t)
	s.startAgent(t, agentOptions{tunnels: 1})
	up := s.stuckStream(t)
	defer up.Close()
	s.sink.closeAll() // unread data: the target's kernel answers with RST

	buf := make([]byte, 256<<10)
	var err error
	start := time.Now()
	_ = up.SetWriteDeadline(time.Now().Add(15 * time.Second))
	for {
		if _, err = up.Write(buf); err != nil {
			break
		}
	}
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the client's upload ends with an error, it does not block")
	testkit.WaitFor(t, 10*time.Second, "relay releases the aborted stream", func() bool {
		st, err := s.relay.tryStatus(s.connID)
		return err == nil && len(st.Agents) == 1 && st.Agents[0].ActiveStreams == 0
	})
	t.Logf("target reset during upload: client stream ended after %s", time.Since(start).Round(time.Millisecond))
}

// A tunnel that dies while one of its streams is stuck on a target that
// reads nothing is redialled at once: the stuck stream must not hold the
// tunnel slot.
func TestFaultRelayKillWithStuckStream(t *testing.T) {
	s := newSystem(t)
	s.startAgent(t, agentOptions{tunnels: 1})
	stuck := s.stuckStream(t)
	defer stuck.Close()
	s.relay.Kill()
	s.relay = startRelay(t, s.relay.dataDir, s.relay.apiAddr, s.relay.proxyAddr)
	back := s.waitConnected(t, 20*time.Second)
	assert.LessOrEqual(t, back, 2*time.Second, "reconnect after the relay listens again")
	require.NoError(t, s.roundTrip(1<<20, 20*time.Second))
}

// A stopping agent drains its streams; a second signal cuts them, even
// one stuck writing to a target that reads nothing.
func TestFaultAgentForcedStopCutsStuckStream(t *testing.T) {
	s := newSystem(t)
	a := s.startAgent(t, agentOptions{tunnels: 1})
	stuck := s.stuckStream(t)
	defer stuck.Close()
	a.Signal(t, syscall.SIGTERM)
	time.Sleep(time.Second)
	a.Signal(t, syscall.SIGTERM)
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("agent still running 5 s after the second SIGTERM")
	}
}

// stuckStream opens a tunnel to the sink target and writes to it until a
// write makes no progress for 2 s: the target reads nothing, so the
// stream's window and the buffers on the way are full, and the agent's
// write to the target is blocked.
func (s *system) stuckStream(t *testing.T) *testkit.BufferedConn {
	t.Helper()
	stuck, err := s.connect(s.sink.addr, 10*time.Second)
	require.NoError(t, err)
	buf := make([]byte, 256<<10)
	for {
		_ = stuck.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := stuck.Write(buf); err != nil {
			return stuck // the path is full
		}
	}
}
