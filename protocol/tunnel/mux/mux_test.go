package mux

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Every goroutine a session starts ends with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig() Config {
	return Config{AcceptBacklog: 64, WriteTimeout: 2 * time.Second, StreamOpenTimeout: 2 * time.Second, MaxStreamWindow: 1 << 20}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s := <-ch
	require.NotNil(t, s)
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c, s
}

// end is one side of a session, ours or HashiCorp's, behind the calls the
// tests make.
type end struct {
	open   func() (net.Conn, error)
	accept func() (net.Conn, error)
	close  func() error
}

func ours(t testing.TB, c net.Conn, client bool, cfg Config) (end, *Session) {
	t.Helper()
	start := Server
	if client {
		start = Client
	}
	s, err := start(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return end{
		open:   func() (net.Conn, error) { return s.Open() },
		accept: func() (net.Conn, error) { return s.Accept() },
		close:  s.Close,
	}, s
}

func hashicorps(t testing.TB, c net.Conn, client bool) end {
	t.Helper()
	cfg := yamux.DefaultConfig()
	cfg.MaxStreamWindowSize = 1 << 20
	cfg.LogOutput = io.Discard
	start := yamux.Server
	if client {
		start = yamux.Client
	}
	s, err := start(c, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return end{
		open:   func() (net.Conn, error) { return s.OpenStream() },
		accept: func() (net.Conn, error) { return s.AcceptStream() },
		close:  s.Close,
	}
}

// echo answers every stream it accepts with what it reads, then FIN.
func echo(e end) {
	for {
		st, err := e.accept()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			_, _ = io.Copy(st, st)
		}()
	}
}

// roundTrip sends payload on a new stream, half-closes, and checks the
// echo comes back whole and in order.
func roundTrip(e end, payload []byte) error {
	st, err := e.open()
	if err != nil {
		return err
	}
	defer st.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(payload)
		if err == nil {
			err = st.(closeWriter).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo differs: %d bytes back of %d", len(got), len(payload))
	}
	return nil
}

type closeWriter interface{ CloseWrite() error }

func TestStreamsBothWaysWithEitherImplementation(t *testing.T) {
	// HashiCorp's yamux has no CloseWrite; its Close is the half-close.
	pairs := map[string]func(t *testing.T) (client, server end){
		"ours both ends": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			ce, _ := ours(t, c, true, testConfig())
			se, _ := ours(t, s, false, testConfig())
			return ce, se
		},
		"our client, yamux server": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			ce, _ := ours(t, c, true, testConfig())
			return ce, hashicorps(t, s, false)
		},
		"yamux client, our server": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			se, _ := ours(t, s, false, testConfig())
			return hashicorps(t, c, true), se
		},
		// Openings and acknowledgements held back to leave with the
		// first frames: the bytes are the same, in fewer writes.
		"ours both ends, lazy opens and held acknowledgements": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			ce, cs := ours(t, c, true, holdingConfig())
			se, ss := ours(t, s, false, holdingConfig())
			return lazy(ce, cs), lazy(se, ss)
		},
		"our lazy client, yamux server": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			ce, cs := ours(t, c, true, holdingConfig())
			return lazy(ce, cs), hashicorps(t, s, false)
		},
		"yamux client, our server holding acknowledgements": func(t *testing.T) (end, end) {
			c, s := tcpPair(t)
			se, ss := ours(t, s, false, holdingConfig())
			return hashicorps(t, c, true), lazy(se, ss)
		},
	}
	for name, pair := range pairs {
		t.Run(name, func(t *testing.T) {
			client, server := pair(t)
			go echo(client)
			go echo(server)
			// Streams from both sides at once, each larger than the
			// window, plus small ones.
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := range 8 {
				for _, e := range []end{client, server} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						size := 3<<20 + i*7919
						if i%2 == 1 {
							size = 100 + i
						}
						payload := make([]byte, size)
						_, _ = rand.Read(payload)
						errs <- roundTrip(withCloseWrite(e), payload)
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				assert.NoError(t, err)
			}
		})
	}
}

// holdingConfig is testConfig with acknowledgements held back.
func holdingConfig() Config {
	cfg := testConfig()
	cfg.AckHold = time.Second
	return cfg
}

// lazy has e open its streams with OpenLazy.
func lazy(e end, s *Session) end {
	e.open = func() (net.Conn, error) { return s.OpenLazy() }
	return e
}

// withCloseWrite gives HashiCorp's streams the CloseWrite roundTrip uses.
func withCloseWrite(e end) end {
	open := e.open
	e.open = func() (net.Conn, error) {
		c, err := open()
		if err != nil {
			return nil, err
		}
		if _, ok := c.(closeWriter); ok {
			return c, nil
		}
		return halfCloser{c}, nil
	}
	return e
}

type halfCloser struct{ net.Conn }

func (h halfCloser) CloseWrite() error { return h.Conn.Close() }

// pair starts our client and server on a loopback connection.
func pair(t testing.TB, client, server Config) (*Session, *Session) {
	t.Helper()
	c, s := tcpPair(t)
	_, cs := ours(t, c, true, client)
	_, ss := ours(t, s, false, server)
	return cs, ss
}

func TestAWriterWaitsForWindowAndTheReaderGetsEverything(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)

	// Not yet accepted, the stream has the protocol's initial window:
	// the writer gets that out and waits.
	require.NoError(t, st.SetWriteDeadline(time.Now().Add(300*time.Millisecond)))
	n, err := st.Write(payload)
	require.ErrorIs(t, err, ErrTimeout)
	assert.Equal(t, initialWindow, n, "exactly the initial window went out before the stream was accepted")

	// Accepted, the window grows to the largest; nobody reads yet.
	peer, err := server.Accept()
	require.NoError(t, err)
	require.NoError(t, st.SetWriteDeadline(time.Now().Add(300*time.Millisecond)))
	m, err := st.Write(payload[n:])
	require.ErrorIs(t, err, ErrTimeout)
	n += m
	assert.Equal(t, 1<<20, n, "exactly the largest window went out before the reader read")
	require.NoError(t, st.SetWriteDeadline(time.Time{}))
	go func() {
		_, _ = st.Write(payload[n:])
		_ = st.Close()
	}()
	got, err := io.ReadAll(peer)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, got), "every byte, in order")

	peer.mu.Lock()
	defer peer.mu.Unlock()
	assert.Nil(t, peer.recv.bufs, "a drained stream holds no buffer")
}

func TestHalfCloseKeepsTheOtherDirection(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	_, err = st.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, st.Close())
	_, err = st.Write([]byte("more"))
	require.ErrorIs(t, err, ErrStreamClosed)

	peer, err := server.Accept()
	require.NoError(t, err)
	got, err := io.ReadAll(peer)
	require.NoError(t, err)
	assert.Equal(t, "request", string(got))
	_, err = peer.Write([]byte("response"))
	require.NoError(t, err)
	require.NoError(t, peer.Close())

	back, err := io.ReadAll(st)
	require.NoError(t, err)
	assert.Equal(t, "response", string(back))
	require.Eventually(t, func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 },
		2*time.Second, 5*time.Millisecond, "a stream closed both ways is forgotten on both ends")
}

func TestReadDeadline(t *testing.T) {
	client, _ := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)

	require.NoError(t, st.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = st.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())

	// A deadline moved while a read waits applies to that read.
	require.NoError(t, st.SetReadDeadline(time.Time{}))
	done := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, st.SetReadDeadline(time.Now()))
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrTimeout)
	case <-time.After(2 * time.Second):
		t.Fatal("the waiting read did not see its new deadline")
	}
}

func TestAFullBacklogAndAGoAwayResetStreams(t *testing.T) {
	cfg := testConfig()
	cfg.AcceptBacklog = 2
	client, server := pair(t, testConfig(), cfg)
	var streams []*Stream
	for range 3 {
		st, err := client.Open()
		require.NoError(t, err)
		streams = append(streams, st)
	}
	_, err := streams[2].Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrConnectionReset, "the stream past the backlog is reset")

	require.NoError(t, server.GoAway())
	require.Eventually(t, func() bool {
		_, err := client.Open()
		return errors.Is(err, ErrRemoteGoAway)
	}, 2*time.Second, 5*time.Millisecond)
	for _, st := range streams[:2] {
		peer, err := server.Accept()
		require.NoError(t, err, "streams opened before the go away are still served")
		_, err = st.Write([]byte("x"))
		require.NoError(t, err)
		_, err = io.ReadFull(peer, make([]byte, 1))
		require.NoError(t, err)
	}
}

// rawPeer is a peer that speaks frames by hand.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
}

func (p rawPeer) send(typ byte, flags uint16, id, length uint32, body []byte) {
	var hdr [headerSize]byte
	hdr[1] = typ
	binary.BigEndian.PutUint16(hdr[2:], flags)
	binary.BigEndian.PutUint32(hdr[4:], id)
	binary.BigEndian.PutUint32(hdr[8:], length)
	_, err := p.conn.Write(append(hdr[:], body...))
	require.NoError(p.t, err)
}

// next reads the next frame header and skips its body.
func (p rawPeer) next() (typ byte, flags uint16, id, length uint32) {
	var hdr [headerSize]byte
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadFull(p.conn, hdr[:])
	require.NoError(p.t, err)
	typ, flags = hdr[1], binary.BigEndian.Uint16(hdr[2:])
	id, length = binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint32(hdr[8:])
	if typ == typeData {
		_, err = io.CopyN(io.Discard, p.conn, int64(length))
		require.NoError(p.t, err)
	}
	return
}

func TestAnUnacknowledgedOpenEndsTheSession(t *testing.T) {
	c, s := tcpPair(t)
	cfg := testConfig()
	cfg.StreamOpenTimeout = 100 * time.Millisecond
	_, sess := ours(t, c, true, cfg)
	peer := rawPeer{t, s}
	_, err := sess.Open()
	require.NoError(t, err)
	typ, flags, id, _ := peer.next()
	assert.Equal(t, [3]uint32{typeWindowUpdate, flagSYN, 1}, [3]uint32{uint32(typ), uint32(flags), id})
	select {
	case <-sess.CloseChan():
		require.ErrorIs(t, sess.Err(), ErrOpenTimeout)
	case <-time.After(3 * time.Second):
		t.Fatal("the session outlived an open the peer never acknowledged")
	}

	// Acknowledged in time, the session stays.
	c, s = tcpPair(t)
	_, sess = ours(t, c, true, cfg)
	peer = rawPeer{t, s}
	_, err = sess.Open()
	require.NoError(t, err)
	_, _, id, _ = peer.next()
	peer.send(typeWindowUpdate, flagACK, id, 0, nil)
	time.Sleep(3 * cfg.StreamOpenTimeout)
	assert.False(t, sess.IsClosed())
}

func TestPingsAndAnUnansweredPing(t *testing.T) {
	client, _ := pair(t, testConfig(), testConfig())
	rtt, err := client.Ping()
	require.NoError(t, err)
	assert.Greater(t, rtt, time.Duration(0))

	c, s := tcpPair(t)
	cfg := testConfig()
	cfg.WriteTimeout = 200 * time.Millisecond
	_, sess := ours(t, c, true, cfg)
	peer := rawPeer{t, s}
	start := time.Now()
	done := make(chan error, 1)
	sess.PingThen(func(_ time.Duration, err error) { done <- err })
	typ, flags, _, _ := peer.next()
	assert.Equal(t, [2]uint32{typePing, flagSYN}, [2]uint32{uint32(typ), uint32(flags)})
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrKeepAliveTimeout)
		assert.Less(t, time.Since(start), 2*time.Second)
	case <-time.After(3 * time.Second):
		t.Fatal("an unanswered ping never ended")
	}
	<-sess.CloseChan()
	require.ErrorIs(t, sess.Err(), ErrKeepAliveTimeout)

	// The peer's ping is answered with its own opaque value.
	c, s = tcpPair(t)
	ours(t, c, false, testConfig())
	peer = rawPeer{t, s}
	peer.send(typePing, flagSYN, 0, 4242, nil)
	typ, flags, _, length := peer.next()
	assert.Equal(t, [3]uint32{typePing, flagACK, 4242}, [3]uint32{uint32(typ), uint32(flags), length})
}

func TestAPeerThatStopsReadingEndsTheSessionAfterTheWriteTimeout(t *testing.T) {
	c, s := tcpPair(t)
	require.NoError(t, c.(*net.TCPConn).SetWriteBuffer(64<<10))
	require.NoError(t, s.(*net.TCPConn).SetReadBuffer(64<<10))
	cfg := testConfig()
	cfg.WriteTimeout = 1500 * time.Millisecond
	_, sess := ours(t, c, true, cfg)
	peer := rawPeer{t, s}
	st, err := sess.Open()
	require.NoError(t, err)
	_, _, id, _ := peer.next()
	// A window far larger than the sockets hold, and then silence.
	peer.send(typeWindowUpdate, flagACK, id, 64<<20, nil)
	start := time.Now()
	_, err = st.Write(make([]byte, 32<<20))
	require.ErrorIs(t, err, ErrConnectionWriteTimeout)
	assert.Less(t, time.Since(start), cfg.WriteTimeout+time.Second)
	<-sess.CloseChan()
}

func TestProtocolViolationsEndTheSession(t *testing.T) {
	cases := map[string]func(p rawPeer){
		"data beyond the window": func(p rawPeer) {
			p.send(typeWindowUpdate, flagSYN, 1, 0, nil)
			p.send(typeData, 0, 1, initialWindow+1, make([]byte, initialWindow+1))
		},
		"unknown version": func(p rawPeer) {
			_, _ = p.conn.Write([]byte{1, typePing, 0, flagSYN, 0, 0, 0, 0, 0, 0, 0, 0})
		},
		"unknown type":                 func(p rawPeer) { p.send(9, 0, 0, 0, nil) },
		"stream id of the other end's": func(p rawPeer) { p.send(typeWindowUpdate, flagSYN, 2, 0, nil) },
		"stream opened twice": func(p rawPeer) {
			p.send(typeWindowUpdate, flagSYN, 1, 0, nil)
			p.send(typeWindowUpdate, flagSYN, 1, 0, nil)
		},
	}
	for name, send := range cases {
		t.Run(name, func(t *testing.T) {
			c, s := tcpPair(t)
			_, sess := ours(t, s, false, testConfig())
			send(rawPeer{t, c})
			select {
			case <-sess.CloseChan():
				require.ErrorIs(t, sess.Err(), ErrProtocol)
			case <-time.After(3 * time.Second):
				t.Fatal("the session went on after a protocol violation")
			}
		})
	}
}

func TestWhatArrivedStaysReadableAfterTheSessionEnds(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	peer, err := server.Accept()
	require.NoError(t, err)
	_, err = peer.Write([]byte("welcome"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.recv.size == len("welcome")
	}, 2*time.Second, time.Millisecond)
	_ = server.Close()
	<-client.CloseChan()

	got := make([]byte, 16)
	n, err := st.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "welcome", string(got[:n]))
	_, err = st.Read(got)
	require.ErrorIs(t, err, ErrSessionShutdown, "a stream cut by its session's end is not a clean EOF")
	_, err = st.Write([]byte("x"))
	require.ErrorIs(t, err, ErrSessionShutdown)
	_, err = client.Open()
	require.ErrorIs(t, err, ErrSessionShutdown)
}

func TestChunkPoolClasses(t *testing.T) {
	for _, n := range []int{1, 1 << 10, 1<<10 + 1, 16 << 10, 256<<10 + 12, 1 << 20, 1<<21 + 1} {
		bp := getChunk(n)
		require.GreaterOrEqual(t, len(*bp), n)
		assert.Less(t, len(*bp), 2*n+(1<<10), "size %d got a buffer of %d", n, len(*bp))
		putChunk(bp)
	}
}

func TestRefusedStreamsAreReset(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	waiting, err := client.Open()
	require.NoError(t, err)
	require.Eventually(t, func() bool { return server.NumStreams() == 1 }, 2*time.Second, time.Millisecond)

	require.NoError(t, server.RefuseStreams())
	later, err := client.Open()
	require.NoError(t, err)
	for _, st := range []*Stream{waiting, later} {
		_, err := st.Read(make([]byte, 1))
		require.ErrorIs(t, err, ErrConnectionReset, "stream %d", st.StreamID())
	}
	assert.Equal(t, 0, server.NumStreams(), "refused streams are not kept")
	require.Eventually(t, func() bool { return client.NumStreams() == 0 }, 2*time.Second, time.Millisecond,
		"the opener forgets its reset streams")
	_, err = client.Ping()
	require.NoError(t, err, "the session goes on")
}

func TestAResetEndsTheOtherSideAtOnce(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	peer, err := server.Accept()
	require.NoError(t, err)

	// The peer's writer waits for window nobody will grant, its reader
	// for bytes nobody sends.
	wrote := make(chan error, 1)
	go func() {
		_, err := peer.Write(make([]byte, 4<<20))
		wrote <- err
	}()
	read := make(chan error, 1)
	go func() {
		_, err := peer.Read(make([]byte, 1))
		read <- err
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, st.Reset())
	for _, ch := range []chan error{wrote, read} {
		select {
		case err := <-ch:
			require.ErrorIs(t, err, ErrConnectionReset)
		case <-time.After(2 * time.Second):
			t.Fatal("the peer still waits on a reset stream")
		}
	}
	require.NoError(t, st.Close(), "Close after Reset does nothing")
	require.Eventually(t, func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 },
		2*time.Second, 5*time.Millisecond, "both ends forget a reset stream")
}

func TestOnReadableCallsWhenAReadWouldNotWait(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	calls := make(chan struct{}, 16)
	callWithin := func(d time.Duration) bool {
		select {
		case <-calls:
			return true
		case <-time.After(d):
			return false
		}
	}
	called := func() bool { return callWithin(2 * time.Second) }
	quiet := func() bool { return !callWithin(50 * time.Millisecond) }

	st, err := client.Open()
	require.NoError(t, err)
	peer, err := server.Accept()
	require.NoError(t, err)
	assert.False(t, peer.Readable())
	peer.OnReadable(func() { calls <- struct{}{} })
	assert.True(t, quiet(), "nothing to read, no call")

	_, err = st.Write([]byte("hello"))
	require.NoError(t, err)
	require.True(t, called(), "bytes arrived")
	assert.True(t, peer.Readable())
	got := make([]byte, 16)
	n, err := peer.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got[:n]))
	assert.False(t, peer.Readable(), "all read")

	require.NoError(t, st.Close())
	require.True(t, called(), "the peer's FIN arrived")
	assert.True(t, peer.Readable())
	_, err = peer.Read(got)
	require.ErrorIs(t, err, io.EOF)

	// A callback set on a stream that is readable already runs at once.
	st2, err := client.Open()
	require.NoError(t, err)
	_, err = st2.Write([]byte("x"))
	require.NoError(t, err)
	peer2, err := server.Accept()
	require.NoError(t, err)
	require.Eventually(t, peer2.Readable, 2*time.Second, time.Millisecond)
	peer2.OnReadable(func() { calls <- struct{}{} })
	require.True(t, called(), "readable when the callback was set")
	_, err = peer2.Read(got)
	require.NoError(t, err)

	// The session's end makes every stream readable (peer's too, whose
	// own side is still open): the read says why.
	require.NoError(t, client.Close())
	require.True(t, called(), "the session ended")
	require.True(t, called(), "the session ended")
	assert.True(t, peer2.Readable())
	_, err = peer2.Read(got)
	require.ErrorIs(t, err, ErrSessionShutdown)

	assert.True(t, quiet(), "one call per stream")
}

// A reader learns of its session's end from the session itself, not
// only when the closer reaches its stream: the closer may be slow to get
// there (here it waits on the session's lock), and a reader that looked
// only at its stream would spin meanwhile.
func TestAWaitingReaderSeesTheSessionEndBeforeItsStreamIsReached(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	_, err = server.Accept()
	require.NoError(t, err)
	read := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		read <- err
	}()
	time.Sleep(20 * time.Millisecond) // the reader waits

	client.mu.Lock()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = client.Close()
	}()
	select {
	case err := <-read:
		require.ErrorIs(t, err, ErrSessionShutdown)
	case <-time.After(2 * time.Second):
		t.Error("the reader still waits on a session that ended")
	}
	client.mu.Unlock()
	<-closed
}

// directDest stands for a splice's destination: the receive loop's
// deliveries and the reader's writes land in one place, in the order
// they are made, as they would on a socket.
type directDest struct {
	mu        sync.Mutex
	got       []byte
	direct    int // bytes the receive loop handed over
	take      int // most bytes a delivery takes; 0 means all
	delivered chan struct{}
}

func (d *directDest) deliver(p []byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(p)
	if d.take > 0 {
		n = min(n, d.take)
	}
	d.got = append(d.got, p[:n]...)
	d.direct += n
	select {
	case d.delivered <- struct{}{}:
	default:
	}
	return n
}

func (d *directDest) write(p []byte) {
	d.mu.Lock()
	d.got = append(d.got, p...)
	d.mu.Unlock()
}

func (d *directDest) snapshot() (got []byte, direct int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.got), d.direct
}

func TestDeliverDirectHandsBytesOverWhileAReadWaits(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	st, err := client.Open()
	require.NoError(t, err)
	peer, err := server.Accept()
	require.NoError(t, err)
	dest := &directDest{delivered: make(chan struct{}, 1)}
	peer.DeliverDirect(dest.deliver)

	// The reader copies what it reads to the destination before it reads
	// again, as a splice does.
	reads := make(chan int, 1024)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := peer.Read(buf)
			if n > 0 {
				dest.write(buf[:n])
				reads <- n
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	parked := func() bool {
		peer.mu.Lock()
		defer peer.mu.Unlock()
		return peer.parked
	}
	require.Eventually(t, parked, 2*time.Second, time.Millisecond)

	// A message reaches the destination without the reader waking.
	_, err = st.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	require.NoError(t, err)
	select {
	case <-dest.delivered:
	case <-time.After(2 * time.Second):
		t.Fatal("the receive loop did not deliver the message")
	}
	got, direct := dest.snapshot()
	assert.Equal(t, "GET / HTTP/1.1\r\n\r\n", string(got))
	assert.Equal(t, len(got), direct, "delivered by the receive loop")
	assert.Empty(t, reads, "the reader read nothing")

	// Three windows' worth, all delivered directly: the window the
	// receive loop grants still reaches the writer, which would otherwise
	// stop after one window.
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)
	require.NoError(t, st.SetWriteDeadline(time.Now().Add(5*time.Second)))
	_, err = st.Write(payload)
	require.NoError(t, err, "the writer was given window for the bytes delivered")
	require.Eventually(t, func() bool { got, _ := dest.snapshot(); return len(got) == 18+len(payload) }, 5*time.Second, time.Millisecond)

	// A destination that takes part of each delivery: the rest goes
	// through the reader, and the bytes stay in order.
	dest.mu.Lock()
	dest.take = 1000
	dest.mu.Unlock()
	for i := range 50 {
		msg := bytes.Repeat([]byte{byte('a' + i%26)}, 3000+i)
		_, err = st.Write(msg)
		require.NoError(t, err)
		payload = append(payload, msg...)
	}
	require.NoError(t, st.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, io.EOF)
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not see the FIN")
	}
	got, direct = dest.snapshot()
	want := append([]byte("GET / HTTP/1.1\r\n\r\n"), payload...)
	require.Equal(t, len(want), len(got))
	assert.True(t, bytes.Equal(want, got), "every byte once, in order, whichever way it went")
	assert.Less(t, direct, len(want), "some bytes went through the reader")
	assert.NotEmpty(t, reads, "the reader read the rest")
}

// writeLog is a connection that keeps each Write its session makes.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, bytes.Clone(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *writeLog) take() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.writes
	w.writes = nil
	return out
}

// frames splits written bytes into frame headers (type, flags, id,
// length) and checks every data frame's body is there whole.
func frames(t *testing.T, b []byte) [][4]uint32 {
	t.Helper()
	var out [][4]uint32
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), headerSize, "a cut header")
		typ, flags := b[1], binary.BigEndian.Uint16(b[2:4])
		id, length := binary.BigEndian.Uint32(b[4:8]), binary.BigEndian.Uint32(b[8:12])
		out = append(out, [4]uint32{uint32(typ), uint32(flags), id, length})
		b = b[headerSize:]
		if typ == typeData {
			require.GreaterOrEqual(t, len(b), int(length), "a cut body")
			b = b[length:]
		}
	}
	return out
}

func TestALazyOpeningAndAHeldAcknowledgementLeaveWithTheFirstFrames(t *testing.T) {
	c, s := tcpPair(t)
	cw, sw := &writeLog{Conn: c}, &writeLog{Conn: s}
	cfg := holdingConfig()
	cfg.AckHold = 200 * time.Millisecond
	_, client := ours(t, cw, true, cfg)
	_, server := ours(t, sw, false, cfg)
	grown := cfg.MaxStreamWindow - initialWindow

	st, err := client.OpenLazy()
	require.NoError(t, err)
	assert.Empty(t, cw.take(), "nothing leaves before the stream's first frame")
	_, err = st.Write([]byte("request"))
	require.NoError(t, err)
	w := cw.take()
	require.Len(t, w, 1, "the opening and the request leave in one write")
	assert.Equal(t, [][4]uint32{{typeWindowUpdate, flagSYN, st.id, grown}, {typeData, 0, st.id, 7}}, frames(t, w[0]),
		"the bytes of an opening followed by a data frame")

	peer, err := server.Accept()
	require.NoError(t, err)
	got := make([]byte, 16)
	n, err := peer.Read(got)
	require.NoError(t, err)
	require.Equal(t, "request", string(got[:n]))
	assert.Empty(t, sw.take(), "the acknowledgement waits for the answer")
	_, err = peer.Write([]byte("result"))
	require.NoError(t, err)
	w = sw.take()
	require.Len(t, w, 1, "the acknowledgement and the answer leave in one write")
	assert.Equal(t, [][4]uint32{{typeWindowUpdate, flagACK, st.id, grown + 7}, {typeData, 0, st.id, 6}}, frames(t, w[0]),
		"the acknowledgement grants the window, the request read included, and no update went before it")

	n, err = st.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "result", string(got[:n]))
	st.mu.Lock()
	opening := st.state&stateOpening != 0
	st.mu.Unlock()
	assert.False(t, opening, "the opener saw the acknowledgement")
	time.Sleep(2 * cfg.AckHold)
	assert.Empty(t, sw.take(), "an acknowledgement sent with the answer is not sent again when the hold ends")
}

func TestAHeldAcknowledgementLeavesWhenTheReaderWaitsOrTheHoldEnds(t *testing.T) {
	// The opener gives up on an unacknowledged stream after 300 ms; the
	// acceptor holds acknowledgements for 100 ms and never answers.
	opener := testConfig()
	opener.StreamOpenTimeout = 300 * time.Millisecond
	acceptor := testConfig()
	acceptor.AckHold = 100 * time.Millisecond
	client, server := pair(t, opener, acceptor)
	st, err := client.Open()
	require.NoError(t, err)
	_, err = server.Accept()
	require.NoError(t, err)
	time.Sleep(3 * opener.StreamOpenTimeout)
	require.False(t, client.IsClosed(), "the hold ended and the acknowledgement went: the session stays")
	st.mu.Lock()
	assert.Zero(t, st.state&stateOpening, "acknowledged")
	st.mu.Unlock()

	// With a hold longer than the opener's patience, an acceptor that
	// waits to read sends the acknowledgement at once.
	acceptor.AckHold = 5 * time.Second
	client, server = pair(t, opener, acceptor)
	st, err = client.Open()
	require.NoError(t, err)
	peer, err := server.Accept()
	require.NoError(t, err)
	read := make(chan error, 1)
	go func() {
		_, err := peer.Read(make([]byte, 1))
		read <- err
	}()
	time.Sleep(3 * opener.StreamOpenTimeout)
	require.False(t, client.IsClosed(), "a waiting reader acknowledged the stream")
	_, err = st.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, <-read)
}

func TestALazyStreamReachesThePeerWhenItsReaderWaitsAndNotAfterAReset(t *testing.T) {
	client, server := pair(t, testConfig(), testConfig())
	gone, err := client.OpenLazy()
	require.NoError(t, err)
	require.NoError(t, gone.Reset())

	st, err := client.OpenLazy()
	require.NoError(t, err)
	read := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, _ := st.Read(b)
		read <- string(b[:n])
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	peer, err := server.AcceptContext(ctx)
	require.NoError(t, err, "a reader waiting on a lazy stream announces it")
	assert.Equal(t, st.id, peer.id, "the stream reset before it was announced never reached the peer")
	_, err = peer.Write([]byte("hello"))
	require.NoError(t, err)
	assert.Equal(t, "hello", <-read)
}
