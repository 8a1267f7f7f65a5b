package tunnel

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	return client, server
}

func TestHalfCloseKeepsTheOtherDirectionFlowing(t *testing.T) {
	// user <-> [a  splice  b] <-> target
	user, a := tcpPair(t)
	b, target := tcpPair(t)
	done := make(chan SpliceStats, 1)
	go func() {
		st, err := Splice(a, b, SpliceOptions{})
		assert.NoError(t, err)
		done <- st
	}()

	_, err := user.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, user.(*net.TCPConn).CloseWrite())

	// The target sees the request and then EOF, and can still answer.
	got, err := io.ReadAll(target)
	require.NoError(t, err)
	assert.Equal(t, "request", string(got))
	answer := bytes.Repeat([]byte("z"), 1<<20)
	_, err = target.Write(answer)
	require.NoError(t, err)
	require.NoError(t, target.Close())

	back, err := io.ReadAll(user)
	require.NoError(t, err)
	assert.Equal(t, answer, back)
	st := <-done
	assert.Equal(t, int64(7), st.AToB)
	assert.Equal(t, int64(1<<20), st.BToA)
	_ = user.Close()
}

func TestIdleTimeoutEndsASilentSplice(t *testing.T) {
	user, a := tcpPair(t)
	b, target := tcpPair(t)
	defer user.Close()
	defer target.Close()
	start := time.Now()
	_, err := Splice(a, b, SpliceOptions{IdleTimeout: 100 * time.Millisecond})
	assert.ErrorIs(t, err, ErrIdle)
	assert.Less(t, time.Since(start), 2*time.Second)
	_, err = user.Read(make([]byte, 1))
	assert.Error(t, err, "both sides are closed")
}

func TestResetOnOneSideAbortsBoth(t *testing.T) {
	user, a := tcpPair(t)
	b, target := tcpPair(t)
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Splice(a, b, SpliceOptions{})
		done <- err
	}()
	require.NoError(t, user.(*net.TCPConn).SetLinger(0))
	require.NoError(t, user.Close()) // RST
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("splice did not end after a reset")
	}
	_ = target.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := io.ReadAll(target)
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the target side is closed too")
}

func TestWriteTimeoutEndsASpliceToAStuckReader(t *testing.T) {
	user, a := tcpPair(t)
	b, target := tcpPair(t) // target never reads
	defer target.Close()
	defer user.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Splice(a, b, SpliceOptions{WriteTimeout: 200 * time.Millisecond})
		done <- err
	}()
	// Push until the kernel buffers toward the target are full.
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := user.Write(chunk); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(20 * time.Second):
		t.Fatal("splice to a reader that never reads did not end")
	}
}

func TestCopyBufferGrowsWhileDataFlowsAndShrinksWhenItTrickles(t *testing.T) {
	cb := newCopyBuffer()
	defer cb.release()
	sizes := func() int { return len(cb.bytes()) }
	assert.Equal(t, IdleBufferSize, sizes(), "a direction waits with the idle buffer")
	cb.adapt(100)
	assert.Equal(t, IdleBufferSize, sizes(), "a small read keeps it")
	cb.adapt(IdleBufferSize)
	assert.Equal(t, SmallBufferSize, sizes(), "a full read moves up a size")
	cb.adapt(SmallBufferSize)
	assert.Equal(t, BufferSize, sizes())
	cb.adapt(BufferSize)
	assert.Equal(t, BufferSize, sizes(), "the largest size is the last")
	cb.adapt(BufferSize / 3)
	assert.Equal(t, BufferSize, sizes(), "a partial read of a bulk transfer keeps the large buffer")
	cb.adapt(IdleBufferSize)
	assert.Equal(t, IdleBufferSize, sizes(), "a read that fits the idle buffer hands the large one back")
}
