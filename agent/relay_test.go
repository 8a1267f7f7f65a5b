package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/coalesce"
)

// testToken is the agent token every fake relay expects.
const testToken = "pst_tok123_s3cr3t"

// waitTimeout bounds every wait in these tests; nothing legitimate takes
// this long, so hitting it means a hang.
const waitTimeout = 5 * time.Second

// fakeRelay is the relay end of the wire protocol, just enough of it to
// drive the agent: it authenticates /v1/tunnel, runs a yamux server on the
// WebSocket, reads Hello, answers Welcome, records Health, and lets tests
// open streams and send notices.
type fakeRelay struct {
	srv       *httptest.Server
	heartbeat time.Duration

	// refuse makes the next refuse tunnel requests fail with 401.
	refuse   atomic.Int32
	requests atomic.Int32
	sessions chan *relaySession

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	all    []*relaySession
	nextID int
}

// relaySession is one tunnel as the relay sees it.
type relaySession struct {
	id    int
	auth  string
	hello protocol.Hello
	ws    *websocket.Conn
	mux   *yamux.Session
	ctrl  *yamux.Stream

	mu      sync.Mutex
	healths []protocol.Health
}

// newFakeRelay starts a relay on 127.0.0.1. The server is closed, and its
// tunnels ended, when the test ends.
func newFakeRelay(t *testing.T, heartbeat time.Duration) *fakeRelay {
	t.Helper()
	r := newUnstartedRelay(t, heartbeat)
	r.srv.Start()
	return r
}

// newUnstartedRelay returns a relay whose server the caller starts, so it
// can choose the listener.
func newUnstartedRelay(t *testing.T, heartbeat time.Duration) *fakeRelay {
	t.Helper()
	r := &fakeRelay{heartbeat: heartbeat, sessions: make(chan *relaySession, 32)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serveTunnel))
	t.Cleanup(r.close)
	return r
}

// url is the relay base URL an agent config names.
func (r *fakeRelay) url() string { return "ws://" + r.srv.Listener.Addr().String() }

func (r *fakeRelay) close() {
	r.cancel()
	r.mu.Lock()
	for _, s := range r.all {
		_ = s.mux.Close()
	}
	r.mu.Unlock()
	r.srv.Close() // after this no handler can start
	r.wg.Wait()
}

func refuseJSON(w http.ResponseWriter, status int, reason protocol.Reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"reason": string(reason), "message": msg})
}

func (r *fakeRelay) serveTunnel(w http.ResponseWriter, req *http.Request) {
	r.wg.Add(1)
	defer r.wg.Done()
	r.requests.Add(1)
	if req.URL.Path != protocol.TunnelPath {
		http.NotFound(w, req)
		return
	}
	auth := req.Header.Get("Authorization")
	if auth != "Bearer "+testToken {
		refuseJSON(w, http.StatusUnauthorized, protocol.AgentTokenInvalid, "unknown agent token")
		return
	}
	if n := r.refuse.Load(); n > 0 && r.refuse.CompareAndSwap(n, n-1) {
		refuseJSON(w, http.StatusUnauthorized, protocol.AgentTokenRevoked, "the connection was revoked")
		return
	}
	ws, err := websocket.Accept(w, req, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "subprotocol required")
		return
	}
	nc := websocket.NetConn(r.ctx, ws, websocket.MessageBinary)
	ws.SetReadLimit(coalesce.MaxMessage) // after NetConn, which lifts the limit
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	mux, err := yamux.Server(coalesce.New(nc), cfg)
	if err != nil {
		_ = nc.Close()
		return
	}
	defer mux.Close()

	actx, cancel := context.WithTimeout(r.ctx, waitTimeout)
	ctrl, err := mux.AcceptStreamWithContext(actx)
	cancel()
	if err != nil {
		return
	}
	_ = ctrl.SetDeadline(time.Now().Add(waitTimeout))
	f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
	if err != nil {
		return
	}
	s := &relaySession{auth: auth, ws: ws, mux: mux, ctrl: ctrl}
	if err := f.Decode(protocol.FrameHello, &s.hello); err != nil {
		return
	}
	r.mu.Lock()
	r.nextID++
	s.id = r.nextID
	r.all = append(r.all, s)
	r.mu.Unlock()
	welcome := protocol.Welcome{NodeID: "node-test", HeartbeatMS: r.heartbeat.Milliseconds(), SessionID: "sess-" + strconv.Itoa(s.id)}
	if err := protocol.WriteFrame(ctrl, protocol.FrameWelcome, welcome); err != nil {
		return
	}
	_ = ctrl.SetDeadline(time.Time{})
	r.sessions <- s
	for {
		f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
		if err != nil {
			return
		}
		var h protocol.Health
		if f.Decode(protocol.FrameHealth, &h) == nil {
			s.mu.Lock()
			s.healths = append(s.healths, h)
			s.mu.Unlock()
		}
	}
}

// session waits for the next tunnel to complete its handshake.
func (r *fakeRelay) session(t *testing.T) *relaySession {
	t.Helper()
	select {
	case s := <-r.sessions:
		return s
	case <-time.After(waitTimeout):
		t.Fatal("no tunnel reached the relay")
		return nil
	}
}

// noNewSession asserts that no further tunnel has been handshaken so far.
func (r *fakeRelay) noNewSession(t *testing.T) {
	t.Helper()
	select {
	case s := <-r.sessions:
		t.Fatalf("unexpected new tunnel %d", s.id)
	default:
	}
}

// Healths returns a copy of the Health reports received so far.
func (s *relaySession) Healths() []protocol.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.Health(nil), s.healths...)
}

// closed reports whether the tunnel has ended.
func (s *relaySession) closed() bool {
	select {
	case <-s.mux.CloseChan():
		return true
	default:
		return false
	}
}

// waitClosed waits for the tunnel to end.
func (s *relaySession) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-s.mux.CloseChan():
	case <-time.After(waitTimeout):
		t.Fatalf("tunnel %d did not end", s.id)
	}
}

// notify sends a relay notice on the control stream.
func (s *relaySession) notify(t *testing.T, typ protocol.FrameType, v any) {
	t.Helper()
	require.NoError(t, protocol.WriteFrame(s.ctrl, typ, v))
}

var requestSeq atomic.Int64

// dialRequest is a dial request with a deadline, the way the relay sends one.
func dialRequest(host string, port int) protocol.Request {
	return protocol.Request{
		Op:             protocol.OpDial,
		ID:             "req-" + strconv.FormatInt(requestSeq.Add(1), 10),
		Host:           host,
		Port:           port,
		DeadlineUnixMS: time.Now().Add(waitTimeout).UnixMilli(),
	}
}

// dial opens a stream, sends req and reads the agent's result. The stream
// is returned for the data phase and closed when the test ends.
func (s *relaySession) dial(t *testing.T, req protocol.Request) (protocol.Result, *yamux.Stream) {
	t.Helper()
	buf, err := protocol.AppendFrame(nil, protocol.FrameRequest, req)
	require.NoError(t, err)
	return s.dialRaw(t, buf)
}

// dialRaw is dial with the request frame's bytes given as is.
func (s *relaySession) dialRaw(t *testing.T, frame []byte) (protocol.Result, *yamux.Stream) {
	t.Helper()
	st, err := s.mux.OpenStream()
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	require.NoError(t, st.SetDeadline(time.Now().Add(waitTimeout)))
	_, err = st.Write(frame)
	require.NoError(t, err)
	res, err := protocol.ReadResult(st)
	require.NoError(t, err)
	require.NoError(t, st.SetDeadline(time.Now().Add(waitTimeout)))
	return res, st
}

// exchange writes msg on a dialled stream, half-closes it and returns
// everything read until the agent closes its side.
func exchange(t *testing.T, st *yamux.Stream, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	require.NoError(t, st.Close()) // yamux Close is a write-side close
	got, err := io.ReadAll(st)
	require.NoError(t, err)
	return string(got)
}

// roundTrip writes msg and reads len(msg) bytes back, leaving the stream open.
func roundTrip(t *testing.T, st net.Conn, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(st, buf)
	require.NoError(t, err)
	return string(buf)
}
