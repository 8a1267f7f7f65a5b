package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
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

// A splice from a tunnel stream to a TCP socket has the multiplexer's
// receive loop write to the socket while it takes the bytes at once, and
// the splice's reader write the rest when it does not: the destination
// gets every byte once, in order, and the splice counts them all.
func TestSpliceToATCPSocketKeepsOrderWhicheverWayTheBytesGo(t *testing.T) {
	relayEnd, agentEnd := tcpPair(t)
	relay, err := Server(relayEnd, DefaultConfig())
	require.NoError(t, err)
	defer relay.Close()
	agent, err := Client(agentEnd, DefaultConfig())
	require.NoError(t, err)
	defer agent.Close()

	st, err := relay.Open(t.Context())
	require.NoError(t, err)
	_, err = st.Write([]byte("open")) // the opening leaves with the first frame
	require.NoError(t, err)
	ast, err := agent.Accept()
	require.NoError(t, err)
	_, err = io.ReadFull(ast, make([]byte, 4))
	require.NoError(t, err)
	b, target := tcpPair(t)
	defer target.Close()

	assert.NotNil(t, newDirectSink(b, ast, nil), "a bare TCP socket")
	assert.NotNil(t, newDirectSink(&batch{Conn: b}, ast, nil), "a socket under a batch")
	assert.NotNil(t, newDirectSink(&batch{Conn: passThrough{b}}, ast, nil), "a socket under a batch and a wrapper that writes through")
	assert.Nil(t, newDirectSink(opaque{b}, ast, nil), "a wrapper that may change what it writes")
	assert.Nil(t, newDirectSink(b, b, nil), "the source is not a tunnel stream")
	assert.Nil(t, newDirectSink(tls.Client(b, &tls.Config{MinVersion: tls.VersionTLS12}), ast, nil), "TLS writes records of its own")

	done := make(chan SpliceStats, 1)
	go func() {
		stats, err := Splice(ast, b, SpliceOptions{WriteTimeout: 10 * time.Second})
		assert.NoError(t, err)
		done <- stats
	}()

	var sent []byte
	// Requests one at a time, each read at once: the socket takes them.
	for i := range 20 {
		msg := fmt.Appendf(nil, "request %d\r\n", i)
		_, err := st.Write(msg)
		require.NoError(t, err)
		sent = append(sent, msg...)
		got := make([]byte, len(msg))
		require.NoError(t, target.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = io.ReadFull(target, got)
		require.NoError(t, err)
		require.Equal(t, string(msg), string(got))
	}
	// Then more than the socket holds while the target does not read:
	// deliveries fall short, and the reader finishes them.
	bulk := make([]byte, 16<<20)
	_, _ = rand.Read(bulk)
	sent = append(sent, bulk...)
	writer := make(chan error, 1)
	go func() {
		_, err := st.Write(bulk)
		if err == nil {
			err = st.Close()
		}
		writer <- err
	}()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, target.SetReadDeadline(time.Now().Add(10*time.Second)))
	rest, err := io.ReadAll(target)
	require.NoError(t, err, "the target reads to the FIN")
	require.NoError(t, <-writer)
	got := append(bytes.Clone(sent[:len(sent)-len(bulk)]), rest...)
	require.Equal(t, len(sent), len(got))
	assert.True(t, bytes.Equal(sent, got), "every byte once, in order")

	_ = target.Close()
	_ = st.Close()
	select {
	case stats := <-done:
		assert.Equal(t, int64(len(sent)), stats.AToB, "bytes the receive loop wrote are counted too")
	case <-time.After(10 * time.Second):
		t.Fatal("the splice did not end")
	}
}

// passThrough writes through to its connection, as a PROXY-header
// reader does; opaque is a wrapper that says nothing of its writes.
type (
	passThrough struct{ net.Conn }
	opaque      struct{ net.Conn }
)

func (p passThrough) WriteThrough() net.Conn { return p.Conn }
