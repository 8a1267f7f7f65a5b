package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/coalesce"
)

// Tunnel timing.
const (
	dialTimeout      = 15 * time.Second
	handshakeTimeout = 10 * time.Second
	// StreamWindow is the yamux receive window per stream.
	StreamWindow = 1 << 20
)

// refusedError is the relay refusing the tunnel before the upgrade.
type refusedError struct {
	status  int
	reason  protocol.Reason
	message string
	// retryAfter is the relay's Retry-After (429, 503), zero if none.
	retryAfter time.Duration
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("relay answered %d %s: %s", e.status, e.reason, e.message)
}

// errRevoked reports a Revoked notice from the relay.
var errRevoked = errors.New("relay says the connection was revoked")

// errGoAway reports a GoAway notice: reconnect, the relay is draining.
var errGoAway = errors.New("relay asked the agent to reconnect (goaway)")

func tunnelURL(base *url.URL) string {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + protocol.TunnelPath
	u.RawQuery = ""
	return u.String()
}

// runTunnel dials one tunnel and serves it until it ends. up reports
// whether the handshake completed (so the caller can reset its backoff).
func (a *Agent) runTunnel(ctx context.Context, slot int, base *url.URL, log *slog.Logger) (up bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	sock := &batchSlot{}
	dctx = context.WithValue(dctx, batchKey{}, sock)
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+a.opts.Token)
	hdr.Set("User-Agent", "postern-agent/"+a.opts.Version)
	ws, resp, err := websocket.Dial(dctx, tunnelURL(base), &websocket.DialOptions{
		HTTPClient:      a.relayClient,
		HTTPHeader:      hdr,
		Subprotocols:    []string{protocol.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return false, refusal(resp)
		}
		if strings.Contains(err.Error(), http.StatusText(http.StatusProxyAuthRequired)) {
			// Go's transport reports a refused CONNECT by status text only.
			return false, fmt.Errorf("dial %s: egress proxy answered 407 Proxy Authentication Required: check the user and password in egress_proxy or HTTPS_PROXY: %w", redactURL(base), err)
		}
		return false, fmt.Errorf("dial %s: %w", redactURL(base), err)
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "subprotocol "+protocol.Subprotocol+" required")
		return false, fmt.Errorf("relay did not agree to subprotocol %s", protocol.Subprotocol)
	}

	// The tunnel's lifetime: cancelled when ctx ends or the tunnel fails,
	// or, after a GoAway, once its streams have drained.
	// Not derived from ctx's cancellation: a stopping agent drains its
	// streams before the tunnel goes (see the select below).
	tctx, tcancel := context.WithCancel(context.WithoutCancel(ctx))
	handedOff := false
	defer func() {
		if !handedOff {
			tcancel()
		}
	}()
	nc := websocket.NetConn(tctx, ws, websocket.MessageBinary)
	// After NetConn, which lifts the read limit: no relay message may
	// exceed what coalesce ever sends.
	ws.SetReadLimit(coalesce.MaxMessage)
	wire := coalesce.New(nc)
	if b := sock.get(); b != nil {
		wire = coalesce.NewWithBatch(nc, b)
	}
	mux, err := yamux.Client(wire, a.yamuxConfig(log))
	if err != nil {
		_ = nc.Close()
		return false, err
	}
	defer func() {
		if !handedOff {
			_ = mux.Close()
		}
	}()

	ctrl, welcome, err := a.handshake(mux)
	if err != nil {
		return false, err
	}
	log = log.With("node", welcome.NodeID, "session", welcome.SessionID)
	log.Info("tunnel up")
	a.setTunnel(slot, &tunnelInfo{URL: redactURL(base), NodeID: welcome.NodeID, ConnectedAt: time.Now()})

	var streams sync.WaitGroup
	errc := make(chan error, 3)
	var loops sync.WaitGroup
	loops.Add(3)
	go func() { defer loops.Done(); errc <- a.readControl(ctrl) }()
	go func() { defer loops.Done(); errc <- a.sendHealth(tctx, ctrl, welcome.HeartbeatInterval()) }()
	go func() { defer loops.Done(); errc <- a.acceptStreams(tctx, mux, &streams, log) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		// Graceful stop: the relay may open no new stream (yamux GoAway);
		// open streams finish until the drain timeout or a forced stop.
		_ = mux.GoAway()
		a.setTunnel(slot, nil)
		waitStreams(a.forceCtx, &streams, a.opts.DrainTimeout)
		err = ctx.Err()
	}
	a.setTunnel(slot, nil)
	closeTunnel := func() {
		tcancel()
		_ = mux.Close()
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

func refusal(resp *http.Response) error {
	var body struct {
		Reason  protocol.Reason `json:"reason"`
		Message string          `json:"message"`
	}
	if resp.Body != nil {
		_ = json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&body)
	}
	if body.Reason == "" {
		body.Reason = protocol.ReasonUnknown
		body.Message = "relay answered " + resp.Status
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			body.Message += " (redirects are never followed; check relay_url)"
		}
	}
	re := &refusedError{status: resp.StatusCode, reason: body.Reason, message: body.Message}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		re.retryAfter = min(time.Duration(secs)*time.Second, 10*time.Minute)
	}
	return re
}

func (a *Agent) yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 512
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	// No close timer: Close is our half-close, and a response may flow
	// for as long as it needs after the request side finished. Stuck
	// streams are ended by the splice's idle and write timeouts instead.
	c.StreamCloseTimeout = 0
	c.MaxStreamWindowSize = StreamWindow
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return c
}

// handshake opens the control stream, sends Hello and reads Welcome.
func (a *Agent) handshake(mux *yamux.Session) (*yamux.Stream, protocol.Welcome, error) {
	ctrl, err := mux.OpenStream()
	if err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("open control stream: %w", err)
	}
	_ = ctrl.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := protocol.WriteFrame(ctrl, protocol.FrameHello, a.hello()); err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("send hello: %w", err)
	}
	f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
	if err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("read welcome: %w", err)
	}
	var w protocol.Welcome
	if err := f.Decode(protocol.FrameWelcome, &w); err != nil {
		return nil, protocol.Welcome{}, err
	}
	if w.HeartbeatMS <= 0 {
		w.HeartbeatMS = (15 * time.Second).Milliseconds()
	}
	_ = ctrl.SetDeadline(time.Time{})
	return ctrl, w, nil
}

// readControl handles relay notices until the control stream ends.
func (a *Agent) readControl(ctrl *yamux.Stream) error {
	for {
		f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
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
func (a *Agent) sendHealth(ctx context.Context, ctrl *yamux.Stream, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		changed := a.policyWatch()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-changed:
		}
		_ = ctrl.SetWriteDeadline(time.Now().Add(every))
		if err := protocol.WriteFrame(ctrl, protocol.FrameHealth, a.health()); err != nil {
			return fmt.Errorf("send health: %w", err)
		}
	}
}

// acceptStreams serves relay-opened streams until the session ends. Each
// stream's goroutine is counted in wg, which the tunnel waits for.
func (a *Agent) acceptStreams(ctx context.Context, mux *yamux.Session, wg *sync.WaitGroup, log *slog.Logger) error {
	for {
		st, err := mux.AcceptStream()
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
