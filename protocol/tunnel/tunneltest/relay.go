package tunneltest

import (
	"context"
	"crypto/sha1" //nolint:gosec // RFC 6455 names SHA-1 for the accept key
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// RelayOptions shape a Relay.
type RelayOptions struct {
	// Token is the agent token a tunnel request must carry; any other is
	// refused 401 AGENT_TOKEN_INVALID. Ignored when Authorize is set.
	Token string
	// Authorize, when set, decides every tunnel request instead of Token:
	// a non-nil error is the refusal to answer.
	Authorize func(*http.Request) *protocol.Error
	// Heartbeat is the Health period Welcome asks for; 15 s when zero.
	Heartbeat time.Duration
	// NodeID names the relay in Welcome; "node-test" when empty.
	NodeID string
	// Nodes is the cluster size Welcome announces; 0 is a single node.
	Nodes int
	// NoSubprotocol upgrades without selecting postern.v1, like a
	// WebSocket server of another protocol.
	NoSubprotocol bool
	// Redirect answers every tunnel request with 302 to this URL.
	Redirect string
	// TLS serves wss:// with this configuration.
	TLS *tls.Config
	// Listener serves on this listener instead of a fresh one.
	Listener net.Listener
}

// Relay is the relay end of the protocol, enough of it to drive an agent:
// it authenticates /v1/tunnel, runs the yamux server, reads Hello, answers
// Welcome and records every Health.
type Relay struct {
	opts     RelayOptions
	srv      *httptest.Server
	requests atomic.Int32

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	all     []*RelaySession
	pending []*RelaySession
	arrived chan struct{} // signalled when pending grows
	hellos  []protocol.Hello
}

// NewRelay starts a relay on 127.0.0.1. It is closed, and its tunnels
// ended, when the test ends.
func NewRelay(t testing.TB, opts RelayOptions) *Relay {
	t.Helper()
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = tunnel.DefaultHeartbeat
	}
	if opts.NodeID == "" {
		opts.NodeID = "node-test"
	}
	r := &Relay{opts: opts, arrived: make(chan struct{}, 1)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	if opts.Listener != nil {
		_ = r.srv.Listener.Close()
		r.srv.Listener = opts.Listener
	}
	if opts.TLS != nil {
		r.srv.TLS = opts.TLS
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.Close)
	return r
}

// URL is the relay base URL an agent config names: ws:// or wss://.
func (r *Relay) URL() string {
	if r.opts.TLS != nil {
		return "wss://" + r.srv.Listener.Addr().String()
	}
	return "ws://" + r.srv.Listener.Addr().String()
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.srv.Listener.Addr().String() }

// Requests counts the tunnel requests received, refused or not.
func (r *Relay) Requests() int { return int(r.requests.Load()) }

// Hellos returns every Hello received so far.
func (r *Relay) Hellos() []protocol.Hello {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]protocol.Hello(nil), r.hellos...)
}

// Close ends every tunnel and stops the server. It is idempotent.
func (r *Relay) Close() {
	r.cancel()
	r.mu.Lock()
	for _, s := range r.all {
		_ = s.Close()
	}
	r.mu.Unlock()
	r.srv.Close() // after this no handler can start
	r.wg.Wait()
}

// Session waits for the next tunnel to complete its handshake.
func (r *Relay) Session(t testing.TB) *RelaySession {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		r.mu.Lock()
		if len(r.pending) > 0 {
			s := r.pending[0]
			r.pending = r.pending[1:]
			r.mu.Unlock()
			return s
		}
		r.mu.Unlock()
		select {
		case <-r.arrived:
		case <-deadline:
			t.Fatal("no tunnel reached the relay")
			return nil
		}
	}
}

// NoNewSession fails the test if a tunnel completed its handshake since
// the last Session call.
func (r *Relay) NoNewSession(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) > 0 {
		t.Fatalf("unexpected new tunnel %d", r.pending[0].ID)
	}
}

func (r *Relay) serve(w http.ResponseWriter, req *http.Request) {
	r.wg.Add(1)
	defer r.wg.Done()
	r.requests.Add(1)
	if req.URL.Path != protocol.TunnelPath {
		http.NotFound(w, req)
		return
	}
	if r.opts.Redirect != "" {
		http.Redirect(w, req, r.opts.Redirect, http.StatusFound)
		return
	}
	if e := r.authorize(req); e != nil {
		Refuse(w, e)
		return
	}
	if r.opts.NoSubprotocol {
		upgradeWithoutSubprotocol(w, req)
		return
	}
	conn, err := tunnel.Upgrade(r.ctx, w, req, protocol.Subprotocol)
	if err != nil {
		return
	}
	r.run(conn, req.Header.Get("Authorization"))
}

func (r *Relay) authorize(req *http.Request) *protocol.Error {
	if r.opts.Authorize != nil {
		return r.opts.Authorize(req)
	}
	if req.Header.Get("Authorization") != "Bearer "+r.opts.Token {
		return protocol.Errorf(protocol.AgentTokenInvalid, "agent token is unknown, wrong or expired")
	}
	return nil
}

// run serves one tunnel until it ends.
func (r *Relay) run(conn net.Conn, auth string) {
	cfg := tunnel.DefaultConfig()
	cfg.KeepAlive = false
	sess, err := tunnel.Server(conn, cfg)
	if err != nil {
		_ = conn.Close()
		return
	}
	defer sess.Close()
	s := &RelaySession{Session: sess, Auth: auth}
	ctx, cancel := context.WithTimeout(r.ctx, WaitTimeout)
	hello, err := sess.AcceptHello(ctx, func(h protocol.Hello) (protocol.Welcome, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.hellos = append(r.hellos, h)
		r.all = append(r.all, s)
		s.ID = len(r.all)
		return protocol.Welcome{NodeID: r.opts.NodeID, Nodes: r.opts.Nodes, HeartbeatMS: r.opts.Heartbeat.Milliseconds(), SessionID: "sess-" + strconv.Itoa(s.ID)}, nil
	})
	cancel()
	if err != nil {
		return
	}
	s.Hello = hello
	r.mu.Lock()
	r.pending = append(r.pending, s)
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	s.readControl()
}

// Refuse answers a tunnel request the way a relay refuses one: the
// reason's status, Postern-Reason, Retry-After and the JSON error body.
func Refuse(w http.ResponseWriter, e *protocol.Error) {
	body := e.Normalized()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Postern-Reason", string(body.Reason))
	if body.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(body.RetryAfter))
	}
	w.WriteHeader(e.Status())
	_ = json.NewEncoder(w).Encode(body)
}

// upgradeWithoutSubprotocol completes a WebSocket opening handshake that
// selects no subprotocol, then hangs up.
func upgradeWithoutSubprotocol(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) //nolint:gosec
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
	_ = brw.Flush()
	_ = conn.SetReadDeadline(time.Now().Add(WaitTimeout))
	_, _ = conn.Read(make([]byte, 1)) // until the client gives up
}

// RelaySession is one tunnel as the relay sees it.
type RelaySession struct {
	*tunnel.Session
	ID    int
	Auth  string // the Authorization header it came with
	Hello protocol.Hello

	mu      sync.Mutex
	healths []protocol.Health
}

func (s *RelaySession) readControl() {
	for {
		f, err := s.Recv(0)
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

// Healths returns a copy of the Health reports received so far.
func (s *RelaySession) Healths() []protocol.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.Health(nil), s.healths...)
}

// Closed reports whether the tunnel has ended.
func (s *RelaySession) Closed() bool { return s.IsClosed() }

// WaitClosed waits for the tunnel to end.
func (s *RelaySession) WaitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(WaitTimeout):
		t.Fatalf("tunnel %d did not end", s.ID)
	}
}

// Notify sends a relay notice on the control stream. A notice that ends
// the tunnel can race its own write acknowledgement: the agent may read
// it and close the session before the sender learns the write went out,
// which the session reports as its shutdown. That counts as delivered; callers
// check what the agent did with it.
func (s *RelaySession) Notify(t testing.TB, typ protocol.FrameType, v any) {
	t.Helper()
	err := s.Send(typ, v, WaitTimeout)
	if errors.Is(err, tunnel.ErrSessionShutdown) {
		return
	}
	require.NoError(t, err)
}

// Dial opens a stream, sends req and reads the agent's result. The stream
// is returned for the data phase and closed when the test ends.
func (s *RelaySession) Dial(t testing.TB, req protocol.Request) (protocol.Result, *tunnel.Stream) {
	t.Helper()
	buf, err := protocol.AppendFrame(nil, protocol.FrameRequest, req)
	require.NoError(t, err)
	return s.DialRaw(t, buf)
}

// DialRaw is Dial with the request frame's bytes given as they are.
func (s *RelaySession) DialRaw(t testing.TB, frame []byte) (protocol.Result, *tunnel.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	st, err := s.Open(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	require.NoError(t, st.SetDeadline(time.Now().Add(WaitTimeout)))
	_, err = st.Write(frame)
	require.NoError(t, err)
	res, err := protocol.ReadResult(st)
	require.NoError(t, err)
	require.NoError(t, st.SetDeadline(time.Now().Add(WaitTimeout)))
	return res, st
}

// BearerToken is the token of an Authorization header, or "".
func BearerToken(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}
