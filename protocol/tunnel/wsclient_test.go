package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// libraryEcho is a WebSocket server of the library, the reference peer of
// the client end: it echoes every message, and reports how the client
// closed.
func libraryEcho(t *testing.T, subprotocol string, closed chan<- error) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{subprotocol}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(MaxMessage)
		ctx := r.Context()
		if r.URL.Query().Has("ping") {
			// The client's reader answers, here while it waits for the
			// first message; the library reads the pong in Read below.
			go func() {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				closed <- ws.Ping(pctx)
			}()
		}
		for {
			typ, msg, err := ws.Read(ctx)
			if err != nil {
				closed <- err
				return
			}
			if err := ws.Write(ctx, typ, msg); err != nil {
				closed <- err
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func dialEcho(t *testing.T, srv *httptest.Server, query string) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, err := dialWebSocket(ctx, http.DefaultClient, "ws"+srvURL(srv)+query, http.Header{}, "echo.v1", nil)
	require.NoError(t, err)
	return ws
}

func srvURL(srv *httptest.Server) string { return srv.URL[len("http"):] }

func TestTheClientEndTalksToTheWebSocketLibraryServer(t *testing.T) {
	closed := make(chan error, 2)
	srv := libraryEcho(t, "echo.v1", closed)
	ws := dialEcho(t, srv, "")
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	readBack := func(n int) []byte {
		got := make([]byte, n)
		_, err := io.ReadFull(ws, got)
		require.NoError(t, err)
		return got
	}
	// Every size class of the header, and each side of the join limit and
	// of the buffer a message is masked in (larger ones go in pieces).
	for _, n := range []int{1, 125, 126, 4096, joinLimit, joinLimit + 100, 65536, BufferSize, BufferSize + 1000, MaxMessage} {
		msg := random(n)
		_, err := ws.Write(msg)
		require.NoError(t, err)
		require.True(t, bytes.Equal(msg, readBack(n)), "%d bytes", n)
	}
	// A header and a body go as one message, whatever their sizes.
	for _, n := range []int{0, 5, joinLimit, BufferSize} {
		hdr, body := random(headerSize), random(n)
		m, err := ws.writeMessage(hdr, body)
		require.NoError(t, err)
		require.Equal(t, headerSize+n, m)
		require.True(t, bytes.Equal(append(hdr, body...), readBack(headerSize+n)), "header and %d bytes", n)
	}
	require.NoError(t, ws.Close())
	var ce websocket.CloseError
	require.ErrorAs(t, <-closed, &ce, "the server saw a close frame")
	assert.Equal(t, websocket.StatusNormalClosure, ce.Code)
}

func TestTheClientEndAnswersTheServersPing(t *testing.T) {
	closed := make(chan error, 2)
	srv := libraryEcho(t, "echo.v1", closed)
	ws := dialEcho(t, srv, "?ping")
	read := make(chan error, 1)
	go func() {
		b := make([]byte, 4)
		_, err := io.ReadFull(ws, b)
		read <- err
	}()
	require.NoError(t, <-closed, "the ping was answered")
	_, err := ws.Write([]byte("done"))
	require.NoError(t, err)
	require.NoError(t, <-read)
	require.NoError(t, ws.Close())
}

// rawUpgrade is a server answering every request with the head given,
// as if it had upgraded.
func rawUpgrade(t *testing.T, head func(key string) string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, head(r.Header.Get("Sec-WebSocket-Key")))
		// Hold the connection until the client goes.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestTheClientEndRefusesAnAnswerThatIsNoWebSocketUpgrade(t *testing.T) {
	good := func(extra string) func(string) string {
		return func(key string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
				wsAccept(key) + "\r\n" + extra + "\r\n"
		}
	}
	for name, tc := range map[string]struct {
		head func(string) string
		want string
	}{
		"wrong accept": {func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
				wsAccept("another key") + "\r\nSec-WebSocket-Protocol: echo.v1\r\n\r\n"
		}, "does not answer the key"},
		"no upgrade token": {func(key string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept(key) + "\r\n\r\n"
		}, "Upgrade: websocket"},
		"extension chosen": {good("Sec-WebSocket-Protocol: echo.v1\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"), "extensions"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := rawUpgrade(t, tc.head)
			_, err := dialWebSocket(t.Context(), http.DefaultClient, "ws"+srvURL(srv), http.Header{}, "echo.v1", nil)
			require.ErrorIs(t, err, ErrBadUpgrade)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("another subprotocol", func(t *testing.T) {
		srv := rawUpgrade(t, good("Sec-WebSocket-Protocol: other.v1\r\n"))
		_, err := dialWebSocket(t.Context(), http.DefaultClient, "ws"+srvURL(srv), http.Header{}, "echo.v1", nil)
		var se *SubprotocolError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, &SubprotocolError{Chosen: "other.v1", Wanted: "echo.v1"}, se)
	})
}

func TestDialReadsTheRelaysRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "Bearer secret-token", r.Header.Get("Authorization"), "the token goes only in Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Postern-Reason", "AGENT_TOKEN_REVOKED")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"reason":"AGENT_TOKEN_REVOKED","message":"revoked"}`)
	}))
	defer srv.Close()
	base, err := url.Parse(srv.URL)
	require.NoError(t, err)
	_, err = DialConn(t.Context(), base, DialOptions{Token: "secret-token", Config: DefaultConfig()})
	var ue *UpgradeError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, http.StatusUnauthorized, ue.StatusCode)
	require.NotNil(t, ue.Refusal)
	assert.Equal(t, "AGENT_TOKEN_REVOKED", string(ue.Refusal.Reason))
}

func TestTheClientEndMasksEveryFrameWithItsOwnKey(t *testing.T) {
	conn := &scriptConn{}
	ws := newClientConn(conn)
	msgs := [][]byte{[]byte("one"), bytes.Repeat([]byte{7}, joinLimit+1), bytes.Repeat([]byte{9}, BufferSize)}
	for _, m := range msgs {
		_, err := ws.Write(m)
		require.NoError(t, err)
	}
	hdr := []byte("twelve bytes")
	_, err := ws.writeMessage(hdr, []byte("body"))
	require.NoError(t, err)
	assert.Equal(t, 4, conn.writes, "each message up to BufferSize leaves in one Write")
	ops, payloads, keys := sentFrames(t, conn.out.Bytes(), true)
	require.Equal(t, []byte{opBinary, opBinary, opBinary, opBinary}, ops)
	for i, m := range msgs {
		assert.True(t, bytes.Equal(m, payloads[i]), "message %d unmasks to what was written", i)
	}
	assert.Equal(t, "twelve bytesbody", string(payloads[3]))
	seen := map[[4]byte]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	assert.Len(t, seen, len(keys), "every frame has a key of its own")
}

func TestTheClientEndClosesOnAMaskedFrame(t *testing.T) {
	conn := &scriptConn{chunks: [][]byte{clientFrame(true, opBinary, []byte("masked"), [4]byte{1, 2, 3, 4})}}
	ws := newClientConn(conn)
	_, err := ws.Read(make([]byte, 64))
	var pv *ProtocolViolation
	require.ErrorAs(t, err, &pv)
	assert.Equal(t, closeProtocol, pv.Code)
	ops, payloads, _ := sentFrames(t, conn.out.Bytes(), true)
	require.Equal(t, []byte{opClose}, ops, "a masked close frame went out")
	assert.Equal(t, uint16(closeProtocol), binary.BigEndian.Uint16(payloads[0]))
	_, err = ws.Write([]byte("more"))
	assert.True(t, errors.Is(err, errWSClosing), "nothing is written after the close: %v", err)
}

// The client end holds the socket the handshake went out on, for its
// deadlines and addresses.
func TestDialConnKeepsTheSocketsDeadlinesAndAddresses(t *testing.T) {
	srv := libraryEcho(t, "postern.v1", make(chan error, 2))
	base, err := url.Parse(srv.URL)
	require.NoError(t, err)
	conn, err := DialConn(t.Context(), base, DialOptions{Token: "t", Config: DefaultConfig()})
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, srv.Listener.Addr().String(), conn.RemoteAddr().String())
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = conn.Read(make([]byte, 16))
	var ne net.Error
	require.ErrorAs(t, err, &ne, "nothing was echoed, so the read times out")
	assert.True(t, ne.Timeout())
}

// The client end closes the socket only after the server answered its
// close frame (or wsCloseWait passed), as RFC 6455 asks of a client.
func TestTheClientEndWaitsForTheServersCloseAnswer(t *testing.T) {
	for _, answer := range []bool{true, false} {
		clientSide, serverSide := net.Pipe()
		ws := newClientConn(clientSide)
		read := make(chan error, 1)
		go func() { // the session's reader
			_, err := ws.Read(make([]byte, 64))
			read <- err
		}()
		served := make(chan error, 1)
		go func() {
			buf := make([]byte, 64)
			n, err := serverSide.Read(buf)
			if err != nil {
				served <- err
				return
			}
			// Off the test's goroutine, so no require: a masked close
			// frame, and nothing else, came first.
			if n < 2 || buf[0] != 0x80|opClose || buf[1]&0x80 == 0 || n != 2+4+int(buf[1]&0x7F) {
				served <- fmt.Errorf("not one masked close frame first: %x", buf[:n])
				return
			}
			if !answer {
				served <- nil // silent, and the connection left open
				return
			}
			time.Sleep(50 * time.Millisecond) // the client must still be open
			_, err = serverSide.Write(serverFrame(true, opClose, []byte{3, 232}))
			_ = serverSide.Close()
			served <- err
		}()
		start := time.Now()
		require.NoError(t, ws.Close())
		require.NoError(t, <-served, "answer=%v: the server's close answer reached an open client", answer)
		if answer {
			assert.ErrorIs(t, <-read, io.EOF, "the reader ends on the answer")
		} else {
			assert.GreaterOrEqual(t, time.Since(start), wsCloseWait, "with no answer the client waits its bound, then closes")
			<-read
			_ = serverSide.Close()
		}
	}
}
