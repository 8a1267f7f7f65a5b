package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptConn is a connection whose reads return the chunks given, in
// order, and whose writes are kept.
type scriptConn struct {
	net.Conn
	mu     sync.Mutex
	chunks [][]byte
	out    bytes.Buffer
	writes int
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.out.Write(p)
}

func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }
func (c *scriptConn) Close() error                     { return nil }

// clientFrame encodes a frame as a client sends it, masked with key.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	return encodeFrame(fin, op, payload, &key)
}

// serverFrame encodes a frame as a server sends it, unmasked.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	return encodeFrame(fin, op, payload, nil)
}

// encodeFrame encodes a frame, masked with key unless key is nil.
func encodeFrame(fin bool, op byte, payload []byte, key *[4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var mask byte
	if key != nil {
		mask = 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, mask|byte(n))
	case n <= 0xFFFF:
		f = append(f, mask|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, mask|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if key != nil {
		f = append(f, key[:]...)
	}
	start := len(f)
	f = append(f, payload...)
	if key != nil {
		maskBytes(f[start:], *key, 0)
	}
	return f
}

// serverFrames decodes what a server end wrote: unmasked frames.
func serverFrames(t *testing.T, b []byte) (ops []byte, payloads [][]byte) {
	t.Helper()
	ops, payloads, _ = sentFrames(t, b, false)
	return ops, payloads
}

// sentFrames decodes final frames an end wrote, masked (with the keys
// returned) when the end is a client.
func sentFrames(t *testing.T, b []byte, client bool) (ops []byte, payloads [][]byte, keys [][4]byte) {
	t.Helper()
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), 2)
		require.Equal(t, client, b[1]&0x80 != 0, "a client masks every frame, a server none")
		require.NotZero(t, b[0]&0x80, "an end sends final frames only")
		n, h := int(b[1]&0x7F), 2
		switch n {
		case 126:
			n, h = int(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			n, h = int(binary.BigEndian.Uint64(b[2:10])), 10
		}
		var key [4]byte
		if client {
			key = [4]byte(b[h : h+4])
			keys = append(keys, key)
			h += 4
		}
		payload := append([]byte(nil), b[h:h+n]...)
		maskBytes(payload, key, 0) // the zero key of a server's frame changes nothing
		ops = append(ops, b[0]&0x0F)
		payloads = append(payloads, payload)
		b = b[h+n:]
	}
	return ops, payloads, keys
}

// cut splits b into chunks of random sizes from 1 to most.
func cut(rng *rand.Rand, b []byte, most int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(most))
		out = append(out, append([]byte(nil), b[:n]...))
		b = b[n:]
	}
	return out
}

// readAll reads s to its end with reads of random sizes up to most.
func readAll(rng *rand.Rand, s *wsConn, most int) ([]byte, error) {
	var got []byte
	for {
		p := make([]byte, 1+rng.IntN(most))
		n, err := s.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			return got, err
		}
	}
}

func TestServerConnReadsTheByteStreamWhateverTheCutsAndReadSizes(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var wire, want []byte
		for range 1 + rng.IntN(12) {
			msg := make([]byte, []int{0, 1, 13, 125, 126, 4000, 70000}[rng.IntN(7)])
			for i := range msg {
				msg[i] = byte(rng.Uint32())
			}
			want = append(want, msg...)
			key := [4]byte{byte(rng.Uint32()), byte(rng.Uint32()), 1, 2}
			// Split some messages into a binary frame and continuations,
			// and put pings between frames.
			parts := cut(rng, msg, max(1, len(msg)/2))
			if len(parts) == 0 {
				parts = [][]byte{nil}
			}
			for i, part := range parts {
				op := byte(opContinuation)
				if i == 0 {
					op = opBinary
				}
				wire = append(wire, clientFrame(i == len(parts)-1, op, part, key)...)
				if rng.IntN(3) == 0 {
					wire = append(wire, clientFrame(true, opPing, []byte("are you there"), key)...)
				}
			}
		}
		early, rest := wire[:rng.IntN(min(len(wire), 600))], wire
		rest = rest[len(early):]
		conn := &scriptConn{chunks: cut(rng, rest, 1+rng.IntN(9000))}
		s := newServerConn(conn, early)
		got, err := readAll(rng, s, []int{1, 7, 300, 5000, 100000}[seed%5])
		require.ErrorIs(t, err, io.EOF, "seed %d", seed)
		require.True(t, bytes.Equal(want, got), "seed %d: %d bytes read, %d sent", seed, len(got), len(want))
		ops, payloads := serverFrames(t, conn.out.Bytes())
		for i, op := range ops {
			assert.Equal(t, byte(opPong), op, "seed %d: the server only answers pings here", seed)
			assert.Equal(t, "are you there", string(payloads[i]), "a pong carries its ping's payload")
		}
	}
}

func TestServerConnClosesOnWhatTheProtocolForbids(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	unmasked := clientFrame(true, opBinary, []byte("hi"), key)
	unmasked[1] &^= 0x80
	tooBig := clientFrame(false, opBinary, make([]byte, MaxMessage), key)
	tooBig = append(tooBig, clientFrame(true, opContinuation, []byte{1}, key)...)
	for name, tc := range map[string]struct {
		wire []byte
		code int
		want string
	}{
		"text message":        {clientFrame(true, opText, []byte("hi"), key), closeUnsupported, "binary messages only"},
		"unmasked frame":      {unmasked, closeProtocol, "unmasked"},
		"reserved bit":        {append([]byte{0xC2}, clientFrame(true, opBinary, nil, key)[1:]...), closeProtocol, "reserved bits"},
		"message over limit":  {tooBig, closeTooBig, "over 1048640 bytes"},
		"long ping":           {clientFrame(true, opPing, make([]byte, 126), key), closeProtocol, "over 125 bytes"},
		"stray continuation":  {clientFrame(true, opContinuation, []byte("x"), key), closeProtocol, "no message open"},
		"unknown opcode":      {clientFrame(true, 0x3, []byte("x"), key), closeProtocol, "unknown opcode 3"},
		"unknown control":     {clientFrame(true, 0xB, []byte("x"), key), closeProtocol, "unknown opcode 11"},
		"message interrupted": {append(clientFrame(false, opBinary, []byte("a"), key), clientFrame(true, opBinary, []byte("b"), key)...), closeProtocol, "before the last one ended"},
	} {
		t.Run(name, func(t *testing.T) {
			conn := &scriptConn{chunks: [][]byte{tc.wire, clientFrame(true, opBinary, []byte("after"), key)}}
			s := newServerConn(conn, nil)
			_, err := readAll(rand.New(rand.NewPCG(1, 2)), s, 1<<21)
			var pv *ProtocolViolation
			require.ErrorAs(t, err, &pv)
			assert.Equal(t, tc.code, pv.Code)
			assert.Contains(t, err.Error(), tc.want)
			ops, payloads := serverFrames(t, conn.out.Bytes())
			require.Equal(t, []byte{opClose}, ops, "one close frame, then nothing")
			assert.Equal(t, tc.code, int(binary.BigEndian.Uint16(payloads[0])))
			_, again := s.Read(make([]byte, 10))
			assert.Equal(t, err, again, "a failed connection keeps failing")
			_, err = s.Write([]byte("more"))
			assert.Error(t, err, "nothing is sent after the close frame")
		})
	}
}

func TestServerConnAnswersAClose(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, tc := range []struct {
		payload []byte
		want    error
	}{
		{binary.BigEndian.AppendUint16(nil, closeNormal), io.EOF},
		{nil, io.EOF},
		{append(binary.BigEndian.AppendUint16(nil, 4000), "bye"...), &PeerClosedError{Code: 4000, Reason: "bye"}},
	} {
		conn := &scriptConn{chunks: [][]byte{clientFrame(true, opBinary, []byte("last"), key), clientFrame(true, opClose, tc.payload, key)}}
		s := newServerConn(conn, nil)
		got, err := readAll(rand.New(rand.NewPCG(3, 4)), s, 100)
		assert.Equal(t, "last", string(got))
		assert.Equal(t, tc.want, err)
		ops, payloads := serverFrames(t, conn.out.Bytes())
		require.Equal(t, []byte{opClose}, ops)
		assert.Equal(t, closeNormal, int(binary.BigEndian.Uint16(payloads[0])), "the server answers a close with a normal close")
	}
}

func TestServerConnWritesEachMessageWithItsLengthAndSplitsAtTheLimit(t *testing.T) {
	conn := &scriptConn{}
	s := newServerConn(conn, nil)
	for _, n := range []int{1, 125, 126, joinLimit, joinLimit + 1, 65535, 65536, MaxMessage + 10} {
		before := conn.writes
		_, err := s.Write(bytes.Repeat([]byte{byte(n)}, n))
		require.NoError(t, err)
		if n <= joinLimit {
			assert.Equal(t, 1, conn.writes-before, "a message of %d bytes leaves in one Write (one TLS record)", n)
		}
	}
	ops, payloads := serverFrames(t, conn.out.Bytes())
	var sizes []int
	for i, p := range payloads {
		assert.Equal(t, byte(opBinary), ops[i])
		sizes = append(sizes, len(p))
	}
	assert.Equal(t, []int{1, 125, 126, joinLimit, joinLimit + 1, 65535, 65536, MaxMessage, 10}, sizes)
}

func TestMaskingMatchesTheBytewiseDefinition(t *testing.T) {
	key := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	for n := range 70 {
		for pos := range 4 {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i * 7)
			}
			want := bytes.Clone(b)
			for i := range want {
				want[i] ^= key[(pos+i)%4]
			}
			next := maskBytes(b, key, pos)
			require.Equal(t, want, b, "n=%d pos=%d", n, pos)
			require.Equal(t, (pos+n)%4, next)
		}
	}
}

// wsEcho serves Upgrade on an httptest server and echoes the stream.
func wsEcho(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := Upgrade(t.Context(), w, r, "echo.v1")
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.Copy(conn, conn)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestTheWebSocketLibraryClientTalksToTheServerEnd(t *testing.T) {
	srv := wsEcho(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{"other", "echo.v1"}})
	require.NoError(t, err)
	assert.Equal(t, "echo.v1", ws.Subprotocol(), "the server selects the subprotocol offered")
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	ws.SetReadLimit(MaxMessage)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 125, 126, 4096, 65536, 300000, MaxMessage} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		require.NoError(t, ws.Write(ctx, websocket.MessageBinary, msg))
		var got []byte
		for len(got) < n {
			typ, b, err := ws.Read(ctx)
			require.NoError(t, err)
			require.Equal(t, websocket.MessageBinary, typ)
			got = append(got, b...)
		}
		require.True(t, bytes.Equal(msg, got), "%d bytes echoed as %d", n, len(got))
	}
	// A ping is answered while the echo waits for data.
	pinged := make(chan error, 1)
	go func() { pinged <- ws.Ping(ctx) }()
	go func() { _, _, _ = ws.Read(ctx) }() // a pong is read by a reader
	require.NoError(t, <-pinged)
	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""), "the server answers the close handshake")
}

func TestTheServerEndRefusesWhatIsNoWebSocketOpening(t *testing.T) {
	srv := wsEcho(t)
	for name, tc := range map[string]struct {
		header http.Header
		status int
	}{
		"no upgrade":     {http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, http.StatusUpgradeRequired},
		"version 8":      {http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, http.StatusBadRequest},
		"short key":      {http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"c2hvcnQ="}}, http.StatusBadRequest},
		"another origin": {http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"https://evil.example"}}, http.StatusForbidden},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			req.Header = tc.header
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			assert.Equal(t, tc.status, resp.StatusCode, "answer: %s", body)
			assert.Contains(t, string(body), "websocket:", "the refusal says why")
		})
	}
}

func TestSecWebSocketAcceptOfTheRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", wsAccept("dGhlIHNhbXBsZSBub25jZQ=="))
}

// decodeReference decodes frames to a server end (masked) or a client
// end (unmasked) the simple way, all at once: the payload stream up to the
// first error or close, and whether one came.
func decodeReference(b []byte, masked bool) (payload []byte, stopped bool) {
	inMsg, msgLen := false, 0
	for len(b) >= 2 {
		b0, b1 := b[0], b[1]
		fin, op := b0&0x80 != 0, b0&0x0F
		if b0&0x70 != 0 || (b1&0x80 != 0) != masked {
			return payload, true
		}
		n, h := uint64(b1&0x7F), 2
		if n == 126 {
			if len(b) < 4 {
				return payload, false
			}
			n, h = uint64(binary.BigEndian.Uint16(b[2:4])), 4
		} else if n == 127 {
			if len(b) < 10 {
				return payload, false
			}
			n, h = binary.BigEndian.Uint64(b[2:10]), 10
			if n > 1<<62 {
				return payload, true
			}
		}
		var key [4]byte
		if masked {
			if len(b) < h+4 {
				return payload, false
			}
			key = [4]byte(b[h : h+4])
			h += 4
		}
		switch {
		case op >= opClose && (!fin || n > maxControlPayload):
			return payload, true
		case op >= opClose && op <= opPong:
			if uint64(len(b)-h) < n {
				return payload, false
			}
			if op == opClose {
				return payload, true
			}
			b = b[h+int(n):]
			continue
		case op == opBinary && !inMsg, op == opContinuation && inMsg:
		default:
			return payload, true
		}
		if op == opBinary {
			msgLen = 0
		}
		msgLen += int(min(n, MaxMessage+1))
		if msgLen > MaxMessage {
			return payload, true
		}
		inMsg = !fin
		body := b[h:min(uint64(len(b)), uint64(h)+n)]
		start := len(payload)
		payload = append(payload, body...)
		maskBytes(payload[start:], key, 0)
		if uint64(len(body)) < n {
			return payload, false
		}
		b = b[h+int(n):]
	}
	return payload, false
}

func FuzzServerConnRead(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(clientFrame(true, opBinary, []byte("hello"), key), uint64(1))
	f.Add(append(clientFrame(false, opBinary, []byte("he"), key), clientFrame(true, opContinuation, []byte("llo"), key)...), uint64(2))
	f.Add(append(clientFrame(true, opPing, []byte("p"), key), clientFrame(true, opBinary, make([]byte, 300), key)...), uint64(3))
	f.Add(clientFrame(true, opText, []byte("t"), key), uint64(4))
	f.Add(clientFrame(true, opClose, []byte{3, 232}, key), uint64(5))
	f.Add([]byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, uint64(6))
	f.Fuzz(func(t *testing.T, wire []byte, seed uint64) {
		checkReadAgainstReference(t, wire, seed, false)
	})
}

func FuzzClientConnRead(f *testing.F) {
	f.Add(serverFrame(true, opBinary, []byte("hello")), uint64(1))
	f.Add(append(serverFrame(false, opBinary, []byte("he")), serverFrame(true, opContinuation, []byte("llo"))...), uint64(2))
	f.Add(append(serverFrame(true, opPing, []byte("p")), serverFrame(true, opBinary, make([]byte, 300))...), uint64(3))
	f.Add(clientFrame(true, opBinary, []byte("masked"), [4]byte{9, 8, 7, 6}), uint64(4))
	f.Add(serverFrame(true, opClose, []byte{3, 234, 'b', 'y', 'e'}), uint64(5))
	f.Add(append(serverFrame(true, opBinary, make([]byte, 70000)), serverFrame(true, opPong, nil)...), uint64(6))
	f.Fuzz(func(t *testing.T, wire []byte, seed uint64) {
		checkReadAgainstReference(t, wire, seed, true)
	})
}

// checkReadAgainstReference reads wire, cut at random, with reads of
// random sizes, through the server end (client false) or the client end,
// and checks it against the reference decoder: the same payload, and a
// close frame sent exactly when the reference stops.
func checkReadAgainstReference(t *testing.T, wire []byte, seed uint64, client bool) {
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	conn := &scriptConn{chunks: cut(rng, wire, 1+rng.IntN(64))}
	s := newServerConn(conn, nil)
	if client {
		s = newClientConn(conn)
	}
	got, err := readAll(rng, s, 1+rng.IntN(300))
	want, stopped := decodeReference(wire, !client)
	if !bytes.Equal(want, got) {
		t.Fatalf("read %x, the reference decodes %x", got, want)
	}
	ops, _, _ := sentFrames(t, conn.out.Bytes(), client)
	closed := slices.Contains(ops, opClose)
	var pv *ProtocolViolation
	if closed && !errors.As(err, &pv) && !errors.Is(err, io.EOF) {
		var pc *PeerClosedError
		if !errors.As(err, &pc) {
			t.Fatalf("a close frame went out, but the read ended with %v", err)
		}
	}
	if stopped != closed {
		t.Fatalf("stopped=%v but the read ended with %v", stopped, err)
	}
}

// A message the relay writes to a plain TCP tunnel allocates nothing: its
// header and the vectored write live in the connection.
func TestTheServerEndWritesAMessageWithoutAllocating(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	s := newServerConn(c, nil)
	require.True(t, s.writev)
	hdr, body := make([]byte, headerSize), make([]byte, 1000)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.writeMessage(hdr, body); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "allocations per message")
}
