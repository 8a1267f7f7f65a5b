// Package broker owns the agent tunnels of one relay node: it runs each
// session from the handshake to its end, keeps the live sessions of every
// connection, picks one for a request, opens a stream and asks the agent
// (dial or check), tells agents to move before the node stops, and cuts
// the tunnels of a revoked connection.
//
// It knows nothing of HTTP, credentials or the store: the caller hands it
// an authenticated connection's byte stream (Accept), and an Observer
// learns of each session's life. Why no tunnel is up, and what the status
// of a connection is, are decided elsewhere from what the broker reports.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/reply"
)

// EndedAfter is how many heartbeat periods without any control frame end
// a session: an agent whose control loop hangs is not trusted with
// streams (spec.md section 10).
const EndedAfter = 10

// DegradedAfter is how long after its last Health a tunnel shows as
// degraded: two and a half heartbeat periods (spec.md section 10).
func DegradedAfter(heartbeat time.Duration) time.Duration { return heartbeat * 5 / 2 }

// seenEvery is how often a live session's presence is recorded.
const seenEvery = time.Minute

// Config configures a broker.
type Config struct {
	// NodeID names this node in Welcome.
	NodeID string
	// HeartbeatInterval is the Health period agents are asked for.
	HeartbeatInterval time.Duration
	// HandshakeTimeout bounds reading Hello and answering Welcome.
	HandshakeTimeout time.Duration
	// MaxStreamsPerTunnel caps concurrent streams on one tunnel.
	MaxStreamsPerTunnel int
	// MaxTunnelsPerConnection caps the tunnels of one connection on this
	// node, those in their handshake included (Reserve); zero means no
	// cap.
	MaxTunnelsPerConnection int
	// Tunnel configures each session's yamux; its AcceptBacklog must be
	// at least MaxStreamsPerTunnel.
	Tunnel tunnel.Config
	// Nodes counts the cluster's nodes that take new tunnels, told to
	// agents in Welcome; nil on a single node.
	Nodes func() int
}

// Validate reports every setting out of range.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is required"))
	}
	if c.HeartbeatInterval <= 0 || c.HandshakeTimeout <= 0 {
		errs = append(errs, errors.New("heartbeat interval and handshake timeout must be positive"))
	}
	if c.MaxStreamsPerTunnel < 1 {
		errs = append(errs, errors.New("max streams per tunnel must be at least 1"))
	}
	if c.MaxTunnelsPerConnection < 0 {
		errs = append(errs, errors.New("max tunnels per connection must not be negative"))
	}
	if err := c.Tunnel.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Observer learns of the sessions' lives: the node's status keeping and
// its records in the store. Its methods are called from the session's own
// goroutine and must not block for long.
type Observer interface {
	// SessionUp is called once a session is registered. An error ends the
	// session at once: the connection was revoked during the handshake.
	SessionUp(ctx context.Context, s *Session) error
	// SessionHealth is called after each Health report is recorded; prev
	// is the allowlist summary the session had before.
	SessionHealth(s *Session, prev protocol.Allowlist)
	// SessionSeen records that the session was alive at at: every minute
	// while it lives, and once when it ends.
	SessionSeen(ctx context.Context, s *Session, at time.Time)
	// SessionDown is called once the session has been removed.
	SessionDown(s *Session)
}

// Broker runs the tunnels of one node.
type Broker struct {
	cfg Config
	obs observers
	log *slog.Logger
	reg registry

	ctx    context.Context // ends every session when the broker closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running Accept
}

// New returns a broker whose sessions are told to obs, in order; Close
// ends its sessions.
func New(cfg Config, log *slog.Logger, obs ...Observer) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Broker{cfg: cfg, obs: obs, log: log, ctx: ctx, cancel: cancel}, nil
}

// Starter is an Observer that is also told of a session just before it
// is registered, while no stream can be routed to it yet: what must be
// true of a connection as soon as one of its tunnels can carry a
// stream (that an agent has connected) is recorded there.
type Starter interface {
	SessionStarting(ctx context.Context, s *Session)
}

// observers tells several observers, in order; SessionUp stops at the
// first error, and the session's end is told in reverse order.
type observers []Observer

func (o observers) SessionStarting(ctx context.Context, s *Session) {
	for _, x := range o {
		if st, ok := x.(Starter); ok {
			st.SessionStarting(ctx, s)
		}
	}
}

func (o observers) SessionUp(ctx context.Context, s *Session) error {
	for _, x := range o {
		if err := x.SessionUp(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func (o observers) SessionHealth(s *Session, prev protocol.Allowlist) {
	for _, x := range o {
		x.SessionHealth(s, prev)
	}
}

func (o observers) SessionSeen(ctx context.Context, s *Session, at time.Time) {
	for _, x := range o {
		x.SessionSeen(ctx, s, at)
	}
}

func (o observers) SessionDown(s *Session) {
	for _, x := range o {
		x.SessionDown(s)
	}
}

// ErrTooManyTunnels refuses a tunnel beyond MaxTunnelsPerConnection.
var ErrTooManyTunnels = errors.New("too many tunnels")

// Reserve takes a place for one more tunnel of the connection before its
// upgrade, so that a tunnel over the cap is refused before it costs
// anything. The place is held until release is called: once Accept has
// returned, or at once when no tunnel follows. Calling release more than
// once is safe.
func (b *Broker) Reserve(connID string) (release func(), err error) {
	if !b.reg.reserve(connID, b.cfg.MaxTunnelsPerConnection) {
		return nil, fmt.Errorf("%w: connection %s already has %d tunnels on relay node %s",
			ErrTooManyTunnels, connID, b.cfg.MaxTunnelsPerConnection, b.cfg.NodeID)
	}
	var once sync.Once
	return func() { once.Do(func() { b.reg.release(connID) }) }, nil
}

// Context ends when the broker closes; byte streams handed to Accept
// should live as long as it.
func (b *Broker) Context() context.Context { return b.ctx }

// Accept runs a tunnel on conn for an authenticated agent until it ends or
// the broker closes: yamux, Hello and Welcome within the handshake timeout,
// registration, then the control stream. A Hello that marks a probe (the
// doctor) is answered and the tunnel closed without registering it.
func (b *Broker) Accept(conn net.Conn, who Identity) error {
	over := make(chan struct{})
	err := b.begin(conn, who, func() { close(over) })
	<-over
	return err
}

// Serve is Accept for a caller that should not stay for the tunnel's
// life, such as an HTTP handler that upgraded the request: it returns at
// once. A goroutine of the broker's runs the handshake and ends with it;
// a live tunnel then holds no goroutine of the broker's while its agent
// is quiet (see control). done, if not nil, is called when the tunnel has
// ended.
func (b *Broker) Serve(conn net.Conn, who Identity, done func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = b.begin(conn, who, done)
	}()
}

// begin runs the handshake on conn and, for an agent's tunnel, registers
// it and starts serving its control stream. ended is called once, when
// the tunnel is over and accounted for: before begin returns if it never
// started.
func (b *Broker) begin(conn net.Conn, who Identity, ended func()) error {
	b.wg.Add(1)
	finish := func() {
		if ended != nil {
			ended()
		}
		b.wg.Done()
	}
	if b.ctx.Err() != nil {
		_ = conn.Close()
		finish()
		return b.ctx.Err()
	}
	mux, err := tunnel.Server(conn, b.cfg.Tunnel)
	if err != nil {
		_ = conn.Close()
		finish()
		return err
	}
	sess, err := b.handshake(mux, who)
	if err != nil {
		b.log.Info("agent handshake", "connection", who.ConnectionID, "remote", who.Remote, "err", err)
		_ = mux.Close()
		finish()
		return err
	}
	if sess.Hello.Probe {
		// A diagnostic handshake: Welcome proved the path and the token;
		// it is no tunnel and changes no status.
		b.log.Info("agent probe answered", "connection", who.ConnectionID, "agent", sess.Hello.AgentID, "remote", who.Remote)
		_ = mux.Close()
		finish()
		return nil
	}
	b.run(sess, finish)
	return nil
}

// handshake reads Hello and answers Welcome. A Hello out of bounds is
// answered with a GoAway saying which field, in place of Welcome, so the
// agent can log why.
func (b *Broker) handshake(mux *tunnel.Session, who Identity) (*Session, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.HandshakeTimeout)
	defer cancel()
	sess := &Session{Identity: who, ID: reply.NewID(8), ConnectedAt: time.Now(), mux: mux}
	hello, err := mux.AcceptHelloWith(ctx, MaxReportBody, decodeHello, func(protocol.Hello) (protocol.Welcome, error) {
		w := protocol.Welcome{NodeID: b.cfg.NodeID, HeartbeatMS: b.cfg.HeartbeatInterval.Milliseconds(), SessionID: sess.ID}
		if b.cfg.Nodes != nil {
			w.Nodes = b.cfg.Nodes()
		}
		return w, nil
	})
	if errors.Is(err, tunnel.ErrOverLimit) {
		err = fmt.Errorf("%w: %v", ErrAgentLimit, err)
	}
	if errors.Is(err, ErrAgentLimit) {
		b.refuseAgent(mux, who, "", err)
	}
	if err != nil {
		return nil, err
	}
	sess.Hello = hello
	return sess, nil
}

// decodeHello decodes a Hello within the bounds of limits.go.
func decodeHello(f protocol.Frame) (protocol.Hello, error) {
	var h protocol.Hello
	if err := decodeControl(f, protocol.FrameHello, &h); err != nil {
		return protocol.Hello{}, err
	}
	if err := validateHello(&h); err != nil {
		return protocol.Hello{}, err
	}
	return h, nil
}

// refuseAgent tells an agent that broke a limit why its session ends, as
// a GoAway, and logs it; the caller closes the session.
func (b *Broker) refuseAgent(mux *tunnel.Session, who Identity, agentID string, err error) {
	reason := goAwayProtocolError
	if errors.Is(err, errHealthFlood) {
		reason = goAwayRateLimited
	}
	msg := clip(err.Error(), MaxText)
	_ = mux.Send(protocol.FrameGoAway, protocol.GoAway{Reason: reason, Message: msg}, noticeTimeout)
	b.log.Warn("agent tunnel closed: the agent broke a limit", "connection", who.ConnectionID,
		"agent", clip(agentID, maxAgentIDLen), "remote", who.Remote, "goaway", reason, "err", msg)
}

// run registers the session and starts serving its control stream;
// finish is called once the tunnel has ended. yamux keepalives notice a
// dead peer; a Health that is late only marks the tunnel degraded (health
// frames queue behind bulk data on a slow link), and one overdue by
// EndedAfter heartbeats ends the session.
func (b *Broker) run(sess *Session, finish func()) {
	b.obs.SessionStarting(b.ctx, sess)
	stale, others := b.reg.add(sess)
	b.replaced(sess, stale, others)
	if err := b.obs.SessionUp(b.ctx, sess); err != nil {
		_ = sess.Notify(protocol.FrameRevoked, refusedNotice(err))
		b.logSession(sess, "agent tunnel closed during handshake", "err", err)
		_ = sess.Close()
		b.down(sess)
		finish()
		return
	}
	b.logSession(sess, "agent tunnel up", "remote", sess.Remote, "version", sess.Hello.Version)

	// Streams the agent opens after the control stream are not part of
	// the protocol: they are reset rather than left to pile up. A failed
	// reset ends the session, and reading the control stream says so.
	_ = sess.mux.RefuseStreams()
	serveControl(b, sess, finish)
}

// down forgets an ended session and tells the observers.
func (b *Broker) down(sess *Session) {
	b.reg.remove(sess)
	b.obs.SessionDown(sess)
	b.checkDuplicate(sess.ConnectionID, sess.Hello.AgentID)
}

// logSession logs one line of a session's life. The session's attributes
// go with each of its few lines, rather than into a logger made With
// them: that formats them into handlers kept for the tunnel's whole life.
func (b *Broker) logSession(sess *Session, msg string, args ...any) {
	b.log.Info(msg, append([]any{"connection", sess.ConnectionID, "agent", sess.Hello.AgentID, "session", sess.ID}, args...)...)
}

// refusedNotice tells the agent why an observer refused its tunnel: the
// observer's reason when it gave one, else its connection's revocation.
func refusedNotice(err error) protocol.Revoked {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return protocol.Revoked{Message: pe.Message, Reason: pe.Reason}
	}
	return protocol.Revoked{Message: "connection revoked", Reason: protocol.AgentTokenRevoked}
}

// errHealthFlood ends a session whose agent sends control frames faster
// than its pacer allows.
var errHealthFlood = fmt.Errorf("%w: control frames faster than %d a heartbeat period (after a burst of %d)",
	ErrAgentLimit, healthPerHeartbeat, healthBurst)

// goAwayLinger is how long a session refused for what its agent sent
// stays open after the GoAway, its control frames skipped unread.
const goAwayLinger = time.Second

// lingerAfterGoAway skips what the agent still sends until it hangs up or
// goAwayLinger passes. Closing at once, with a flood still arriving, would
// make the relay's TCP stack reset the connection, and a reset discards
// the GoAway the agent has not read yet.
func lingerAfterGoAway(mux *tunnel.Session) {
	deadline := time.Now().Add(goAwayLinger)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		_, err := mux.RecvBounded(left, func(protocol.FrameType) int { return 0 })
		if err != nil && !errors.Is(err, tunnel.ErrOverLimit) {
			return
		}
	}
}

// readHealth decodes and checks a Health frame; recvErr is what reading
// it said (nil, or ErrOverLimit).
func readHealth(f protocol.Frame, recvErr error) (protocol.Health, error) {
	var h protocol.Health
	if recvErr != nil {
		return h, fmt.Errorf("%w: %v", ErrAgentLimit, recvErr)
	}
	if err := decodeControl(f, protocol.FrameHealth, &h); err != nil {
		return h, err
	}
	return h, validateHealth(&h)
}

// Sessions returns the connection's sessions that take new streams.
func (b *Broker) Sessions(connID string) []*Session { return b.reg.live(connID) }

// All returns every session of the node, draining ones too.
func (b *Broker) All() []*Session { return b.reg.all() }

// Candidates is the order Ask tries a connection's sessions in: fewest
// active streams first.
func (b *Broker) Candidates(connID string) []*Session { return byLoad(b.reg.live(connID)) }

// Draining lists the connection's sessions that were told to go away but
// still serve: the last resort while their agents move (AskOn).
func (b *Broker) Draining(connID string) []*Session {
	var out []*Session
	for _, s := range b.reg.of(connID) {
		if s.Draining() && !s.Closed() {
			out = append(out, s)
		}
	}
	return byLoad(out)
}

// ActiveStreams counts the streams open on this node.
func (b *Broker) ActiveStreams() int64 {
	var n int64
	for _, s := range b.reg.all() {
		n += s.Active()
	}
	return n
}

// CloseConnection tells every tunnel of a connection that it was revoked
// and closes it; open streams end with it. It returns how many it closed.
func (b *Broker) CloseConnection(connID, msg string) int {
	ss := b.reg.of(connID) // draining ones too
	for _, s := range ss {
		_ = s.Notify(protocol.FrameRevoked, protocol.Revoked{Message: msg, Reason: protocol.AgentTokenRevoked})
		_ = s.Close()
	}
	return len(ss)
}

// Close ends every session and waits for their Accept calls to return. It
// is idempotent.
func (b *Broker) Close() {
	b.cancel()
	for _, s := range b.reg.all() {
		_ = s.Close()
	}
	b.wg.Wait()
}
