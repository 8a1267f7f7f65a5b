package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// Timers of opening a tunnel, as protocol/spec.md section 10 names them.
const (
	// DialTimeout bounds dialing the relay: TCP, egress proxy, TLS and
	// the WebSocket upgrade.
	DialTimeout = 15 * time.Second
	// HelloTimeout bounds the Hello/Welcome exchange once dialled.
	HelloTimeout = 10 * time.Second
)

// Handler serves one stream the relay opened. ctx ends when the tunnel
// closes, and the stream's work soon after. ServeStream either finishes
// the stream, closing st, and returns nil, or returns rest, the remainder
// of the stream's life (a dial's data phase), which then closes st. The
// session runs rest on a fresh goroutine, counted as the same stream: the
// request phase (decoding, DNS, the dial) grows a goroutine's stack, which
// an idle stream would otherwise keep for as long as it stays open.
type Handler interface {
	ServeStream(ctx context.Context, st *tunnel.Stream, log *slog.Logger) (rest func())
}

// Reporter says who the agent is (Hello) and how it is doing (Health).
type Reporter interface {
	Hello() protocol.Hello
	Health() protocol.Health
	// Changed returns a channel closed when a Health report should go at
	// once rather than at the next heartbeat (the allowlist changed).
	Changed() <-chan struct{}
}

// Options shape a Session. Every field but Logger and Force is required.
type Options struct {
	// URL is the relay's base URL; the tunnel is at /v1/tunnel under it.
	URL *url.URL
	// HTTPClient dials the relay: egress proxy, CA bundle, and never a
	// redirect, since the token must not travel on.
	HTTPClient *http.Client
	// Token is the agent token, sent only in the tunnel request.
	Token string
	// UserAgent names the agent in the tunnel request.
	UserAgent string
	Reporter  Reporter
	Handler   Handler
	// DrainTimeout bounds how long Drain lets open streams finish.
	DrainTimeout time.Duration
	// Force, once closed, ends every drain at once; nil never does.
	Force <-chan struct{}
	// Logger receives the session's logs; nil discards them.
	Logger *slog.Logger
	// OnNotice, when set, is told every Notice the relay sends on the
	// control stream (spec.md 6.6), from the session's control loop; it
	// must not block.
	OnNotice func(protocol.Notice)
}

// Validate reports every required field that is missing or out of range.
func (o Options) Validate() error {
	var errs []error
	if o.URL == nil {
		errs = append(errs, errors.New("relay URL is required"))
	}
	if o.HTTPClient == nil {
		errs = append(errs, errors.New("HTTP client is required"))
	}
	if o.Token == "" {
		errs = append(errs, errors.New("token is required"))
	}
	if o.Reporter == nil || o.Handler == nil {
		errs = append(errs, errors.New("reporter and handler are required"))
	}
	if o.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("drain timeout %s: must be positive", o.DrainTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("session options: %w", err)
	}
	return nil
}

// Notices of the relay that end Serve.
var (
	// ErrGoAway: the relay is draining; reconnect, and Drain this session.
	ErrGoAway = errors.New("relay asked the agent to reconnect (goaway)")
	// ErrRevoked: the relay ended the tunnel because the connection was
	// revoked, or because the agent token it was opened with ended; the
	// error carries the relay's reason and message.
	ErrRevoked = errors.New("relay revoked the tunnel")
)

// Session is one tunnel after its handshake.
type Session struct {
	opts    Options
	tun     *tunnel.Session
	welcome protocol.Welcome
	log     *slog.Logger

	// ctx is the tunnel's lifetime, given to every stream. It ends at
	// Close, not when Serve's context ends: a stopping agent lets its
	// streams finish first (Drain).
	ctx    context.Context
	cancel context.CancelFunc
	errc   chan error // the first of the health and accept loops to end says why

	loops   sync.WaitGroup
	streams sync.WaitGroup
	once    sync.Once
}

// Open dials the relay and runs the handshake, each step bounded by its
// timer. A refused tunnel request is a *tunnel.UpgradeError.
func Open(ctx context.Context, opts Options) (*Session, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tun, err := dial(ctx, opts, log)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, HelloTimeout)
	defer cancel()
	welcome, err := tun.Hello(hctx, opts.Reporter.Hello())
	if err != nil {
		_ = tun.Close()
		return nil, err
	}
	s := &Session{
		opts: opts, tun: tun, welcome: welcome, errc: make(chan error, 2),
		log: log.With("node", welcome.NodeID, "session", welcome.SessionID),
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.log.Info("tunnel up")
	return s, nil
}

func dial(ctx context.Context, opts Options, log *slog.Logger) (*tunnel.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	cfg := tunnel.DefaultConfig()
	cfg.Logger = log
	tun, err := tunnel.Dial(dctx, opts.URL, tunnel.DialOptions{
		HTTPClient: opts.HTTPClient,
		Token:      opts.Token,
		UserAgent:  opts.UserAgent,
		Config:     cfg,
	})
	if errors.Is(err, tunnel.ErrProxyAuth) {
		err = fmt.Errorf("%w: check the user and password in egress_proxy or HTTPS_PROXY", err)
	}
	return tun, err
}

// Welcome is the relay's answer to Hello.
func (s *Session) Welcome() protocol.Welcome { return s.welcome }

// Logger is the session's logger, naming the relay node and session.
func (s *Session) Logger() *slog.Logger { return s.log }

// Serve runs the session until it takes no new stream, and says why:
//   - the tunnel failed or the relay revoked the connection: the session
//     is closed when Serve returns;
//   - the relay sent GoAway (ErrGoAway) or ctx ended (ctx.Err(); the relay
//     is told that this end takes no new stream): open streams keep
//     flowing until Drain.
//
// Call Serve once; call Drain or Close after it in every case.
func (s *Session) Serve(ctx context.Context) error {
	s.loops.Add(3)
	ctrl := make(chan error, 1)
	go func() { defer s.loops.Done(); ctrl <- s.readControl() }()
	go func() { defer s.loops.Done(); s.errc <- s.sendHealth() }()
	go func() { defer s.loops.Done(); s.errc <- s.acceptStreams() }()
	select {
	case err := <-ctrl:
		if !errors.Is(err, ErrGoAway) {
			_ = s.Close()
		}
		return err
	case err := <-s.errc:
		// The tunnel ended under the other loops. A relay that revokes
		// or sends away sends its notice and closes at once, so the
		// notice may still wait, read, on the control stream: once the
		// session is closed, the control reader ends at once, and its
		// notice says why better than "session shutdown".
		_ = s.Close()
		if cerr := <-ctrl; errors.Is(cerr, ErrRevoked) || errors.Is(cerr, ErrGoAway) {
			return cerr
		}
		return err
	case <-ctx.Done():
		_ = s.tun.GoAway()
		return ctx.Err()
	}
}

// Drain waits for the open streams to finish, at most DrainTimeout or
// until Force, then closes the session.
func (s *Session) Drain() {
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	t := time.NewTimer(s.opts.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-s.opts.Force:
	}
	_ = s.Close()
	<-done // Close ended every stream
}

// Close ends the tunnel and every stream on it, and returns once every
// goroutine of the session has stopped. It is idempotent.
func (s *Session) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.tun.Close()
	})
	s.loops.Wait() // acceptStreams adds no stream after this
	s.streams.Wait()
	return err
}
