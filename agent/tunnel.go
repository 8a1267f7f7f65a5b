package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// Tunnel timing.
const (
	dialTimeout      = 15 * time.Second
	handshakeTimeout = 10 * time.Second
)

// errRevoked reports a Revoked notice from the relay.
var errRevoked = errors.New("relay says the connection was revoked")

// errGoAway reports a GoAway notice: reconnect, the relay is draining.
var errGoAway = errors.New("relay asked the agent to reconnect (goaway)")

// runTunnel dials one tunnel and serves it until it ends. up reports
// whether the handshake completed (so the caller can reset its backoff).
func (a *Agent) runTunnel(ctx context.Context, slot int, base *url.URL, log *slog.Logger) (up bool, err error) {
	sess, welcome, err := a.openTunnel(ctx, base, log)
	if err != nil {
		return false, err
	}
	handedOff := false
	defer func() {
		if !handedOff {
			_ = sess.Close()
		}
	}()
	// The tunnel's lifetime: cancelled when the tunnel fails or, after a
	// GoAway, once its streams have drained. Not derived from ctx's
	// cancellation: a stopping agent drains its streams before the tunnel
	// goes (see the select below).
	tctx, tcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if !handedOff {
			tcancel()
		}
	}()
	log = log.With("node", welcome.NodeID, "session", welcome.SessionID)
	log.Info("tunnel up")
	a.setTunnel(slot, &tunnelInfo{URL: tunnel.Redact(base), NodeID: welcome.NodeID, ConnectedAt: time.Now()})

	var streams sync.WaitGroup
	errc := make(chan error, 3)
	var loops sync.WaitGroup
	loops.Add(3)
	go func() { defer loops.Done(); errc <- a.readControl(sess) }()
	go func() { defer loops.Done(); errc <- a.sendHealth(tctx, sess, welcome.HeartbeatInterval()) }()
	go func() { defer loops.Done(); errc <- a.acceptStreams(tctx, sess, &streams, log) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		// Graceful stop: the relay may open no new stream (yamux GoAway);
		// open streams finish until the drain timeout or a forced stop.
		_ = sess.GoAway()
		a.setTunnel(slot, nil)
		waitStreams(a.forceCtx, &streams, a.opts.DrainTimeout)
		err = ctx.Err()
	}
	a.setTunnel(slot, nil)
	closeTunnel := func() {
		tcancel()
		_ = sess.Close()
		loops.Wait()
		streams.Wait()
	}
	if errors.Is(err, errGoAway) {
		// The relay is stopping: the slot dials a replacement now while
		// this session finishes its open streams; Run waits for it.
		handedOff = true
		log.Info("relay sent goaway: dialing a replacement while open streams drain")
		a.draining.Add(1)
		go func() {
			defer a.draining.Done()
			waitStreams(a.forceCtx, &streams, a.opts.DrainTimeout)
			closeTunnel()
		}()
		return true, err
	}
	closeTunnel()
	return true, err
}

// openTunnel dials the relay and runs the handshake, each step bounded.
func (a *Agent) openTunnel(ctx context.Context, base *url.URL, log *slog.Logger) (*tunnel.Session, protocol.Welcome, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	cfg := tunnel.DefaultConfig()
	cfg.Logger = log
	sess, err := tunnel.Dial(dctx, base, tunnel.DialOptions{
		HTTPClient: a.relayClient,
		Token:      a.opts.Token,
		UserAgent:  "postern-agent/" + a.opts.Version,
		Config:     cfg,
	})
	if err != nil {
		if errors.Is(err, tunnel.ErrProxyAuth) {
			err = fmt.Errorf("%w: check the user and password in egress_proxy or HTTPS_PROXY", err)
		}
		return nil, protocol.Welcome{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	welcome, err := sess.Hello(hctx, a.hello())
	if err != nil {
		_ = sess.Close()
		return nil, protocol.Welcome{}, err
	}
	return sess, welcome, nil
}

// waitStreams returns when wg is done, timeout passes or ctx ends.
func waitStreams(ctx context.Context, wg *sync.WaitGroup, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// readControl handles relay notices until the control stream ends.
func (a *Agent) readControl(sess *tunnel.Session) error {
	for {
		f, err := sess.Recv(0)
		if err != nil {
			return fmt.Errorf("control stream: %w", err)
		}
		switch f.Type {
		case protocol.FrameGoAway:
			return errGoAway
		case protocol.FrameRevoked:
			var r protocol.Revoked
			_ = f.Decode(protocol.FrameRevoked, &r)
			return fmt.Errorf("%w: %s", errRevoked, r.Message)
		}
		// Unknown notices are ignored: newer relays may add some.
	}
}

// sendHealth reports on the control stream every interval.
func (a *Agent) sendHealth(ctx context.Context, sess *tunnel.Session, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		changed := a.gate.Changed()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-changed:
		}
		// A report may queue behind bulk data on a slow link; it gets a
		// whole period before the tunnel counts as stuck.
		if err := sess.Send(protocol.FrameHealth, a.health(), every); err != nil {
			return fmt.Errorf("send health: %w", err)
		}
	}
}

// acceptStreams serves relay-opened streams until the session ends. Each
// stream's goroutine is counted in wg, which the tunnel waits for.
func (a *Agent) acceptStreams(ctx context.Context, sess *tunnel.Session, wg *sync.WaitGroup, log *slog.Logger) error {
	for {
		st, err := sess.Accept()
		if err != nil {
			return fmt.Errorf("accept stream: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveStream(ctx, st, log)
		}()
	}
}
