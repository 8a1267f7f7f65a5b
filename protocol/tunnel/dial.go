package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
)

// Errors of Dial that callers branch on.
var (
	// ErrProxyAuth: the egress proxy refused the CONNECT with 407.
	ErrProxyAuth = errors.New("egress proxy answered 407 Proxy Authentication Required")
	// ErrBadUpgrade: the server answered 101 but the WebSocket opening
	// handshake is not valid, so it is no WebSocket server (or something
	// in between alters the handshake).
	ErrBadUpgrade = errors.New("invalid WebSocket upgrade")
)

// SubprotocolError means the server upgraded without selecting
// postern.v1: it is not a Postern relay, or something strips the header.
type SubprotocolError struct {
	// Chosen is the subprotocol the server selected, often "".
	Chosen string
	// Wanted is the one the dialler offered.
	Wanted string
}

func (e *SubprotocolError) Error() string {
	return fmt.Sprintf("upgraded, but the server chose subprotocol %q instead of %s", e.Chosen, e.Wanted)
}

// maxRefusalBody bounds how much of a refusal's body is read.
const maxRefusalBody = 16 << 10

// UpgradeError is an answer other than 101 to the tunnel request.
type UpgradeError struct {
	// StatusCode and Status are the answer's, e.g. 401 and "401 Unauthorized".
	StatusCode int
	Status     string
	// Location is a redirect's target, which is never followed.
	Location string
	// Header is the answer's header.
	Header http.Header
	// Refusal is the relay's reason error from the answer, nil when the
	// answer did not come from a Postern relay.
	Refusal *protocol.Error
}

func (e *UpgradeError) Error() string {
	if e.Refusal != nil {
		return fmt.Sprintf("relay answered %d %s", e.StatusCode, e.Refusal.Error())
	}
	msg := "relay answered " + e.Status
	if e.StatusCode >= 300 && e.StatusCode < 400 {
		msg += " (redirects are never followed; check relay_url)"
	}
	return msg
}

// Unwrap gives errors.As the relay's *protocol.Error.
func (e *UpgradeError) Unwrap() error {
	if e.Refusal == nil {
		return nil
	}
	return e.Refusal
}

// RetryAfter is the wait the relay asked for (429, 503), 0 if none.
func (e *UpgradeError) RetryAfter() time.Duration {
	if e.Refusal == nil {
		return 0
	}
	return time.Duration(e.Refusal.RetryAfter) * time.Second
}

// DialOptions configure Dial.
type DialOptions struct {
	// HTTPClient sends the upgrade request: egress proxy, TLS roots and
	// the rule that redirects are never followed are its business. When
	// its Transport is an *http.Transport (or nil), the tunnel knows the
	// socket under the WebSocket: its deadlines and addresses are the
	// tunnel's, and under TLS its writes are batched (see batch).
	HTTPClient *http.Client
	// Token is the agent token, sent only as Authorization: Bearer.
	Token string
	// UserAgent names the dialling program.
	UserAgent string
	// Config configures the yamux session.
	Config Config
	// Peer dials the peer endpoint of another relay node (PeerPath, with
	// PeerSubprotocol) instead of the agent tunnel endpoint.
	Peer bool
}

// Between relay nodes of a cluster, the same transport runs on an
// endpoint of its own with a subprotocol of its own, so that neither end
// can be mistaken for the other.
const (
	PeerPath        = "/v1/peer"
	PeerSubprotocol = "postern-peer.v1"
)

// target is the endpoint and subprotocol opts dial.
func (o DialOptions) target(base *url.URL) (string, string) {
	if o.Peer {
		return endpoint(base, PeerPath), PeerSubprotocol
	}
	return URL(base), protocol.Subprotocol
}

// Dial opens a tunnel to the relay at base: the WebSocket upgrade of
// URL(base) with the token, then the agent's side of the yamux session. It
// returns *UpgradeError when the relay (or something in front of it)
// answers other than 101. The handshake is the caller's next step
// (Session.Hello), so a probe can time and report the two apart.
func Dial(ctx context.Context, base *url.URL, opts DialOptions) (*Session, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	conn, err := DialConn(ctx, base, opts)
	if err != nil {
		return nil, err
	}
	return Client(conn, opts.Config)
}

// DialConn is Dial without the yamux session: the upgraded byte stream
// itself, for tools and tests that speak below yamux.
func DialConn(ctx context.Context, base *url.URL, opts DialOptions) (net.Conn, error) {
	var sock socket
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+opts.Token)
	if opts.UserAgent != "" {
		hdr.Set("User-Agent", opts.UserAgent)
	}
	to, subprotocol := opts.target(base)
	ws, err := dialWebSocket(ctx, sock.client(opts.HTTPClient), to, hdr, subprotocol, sock.conn)
	if err != nil {
		return nil, dialError(base, err)
	}
	// The stream outlives the dial's context; Close ends it.
	return newCoalescer(ws, sock.tlsBatch(base)), nil
}

func dialError(base *url.URL, err error) error {
	var refused *upgradeRefused
	var sub *SubprotocolError
	switch {
	case errors.As(err, &refused):
		defer refused.resp.Body.Close()
		return ReadRefusal(refused.resp)
	case errors.As(err, &sub):
		return err
	case errors.Is(err, ErrBadUpgrade):
		return fmt.Errorf("dial %s: %w", Redact(base), err)
	case strings.Contains(err.Error(), http.StatusText(http.StatusProxyAuthRequired)):
		// Go's transport reports a refused CONNECT by its status text only.
		return fmt.Errorf("dial %s: %w: %v", Redact(base), ErrProxyAuth, err)
	}
	return fmt.Errorf("dial %s: %w", Redact(base), err)
}

// ReadRefusal reads a non-101 answer to a tunnel request: the relay's JSON
// error body when there is one (Postern-Reason as a fallback), Retry-After
// and Location. At most 16 KiB of the body is read.
func ReadRefusal(resp *http.Response) *UpgradeError {
	e := &UpgradeError{StatusCode: resp.StatusCode, Status: resp.Status, Location: resp.Header.Get("Location"), Header: resp.Header}
	var body protocol.Error
	if resp.Body != nil {
		_ = json.NewDecoder(io.LimitReader(resp.Body, maxRefusalBody)).Decode(&body)
	}
	if body.Reason == "" {
		body.Reason = protocol.Reason(resp.Header.Get("Postern-Reason"))
	}
	if body.Reason == "" {
		return e
	}
	if body.RetryAfter <= 0 {
		if d, ok := protocol.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			body.RetryAfter = int((d + time.Second - 1) / time.Second)
		}
	}
	e.Refusal = &body
	return e
}

// socket catches the connection the HTTP transport dials for the upgrade,
// so the tunnel can set its deadlines and, under TLS, batch the writes on
// it.
type socket struct {
	mu sync.Mutex
	b  *batch
}

func (s *socket) get() *batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// conn is get as a net.Conn: nil, not a nil *batch, when no socket was
// caught.
func (s *socket) conn() net.Conn {
	if b := s.get(); b != nil {
		return b
	}
	return nil
}

// client returns hc with a transport of its own whose dialled socket is
// wrapped in a batch. A client whose transport is not an *http.Transport
// is used as it is, without batching.
func (s *socket) client(hc *http.Client) *http.Client {
	if hc == nil {
		hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return hc
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		b := &batch{Conn: c}
		s.mu.Lock()
		s.b = b
		s.mu.Unlock()
		return b, nil
	}
	out := *hc
	out.Transport = tr
	return &out
}

// tlsBatch is the batch of the socket the handshake went out on when
// TLS runs over it (a wss:// relay): the coalescer holds it around each
// message, so the message's records leave in one system call. On plain
// TCP each message is one Write already, and gathering it would only
// copy it.
func (s *socket) tlsBatch(base *url.URL) *batch {
	if base.Scheme != "wss" && base.Scheme != "https" {
		return nil
	}
	return s.get()
}
