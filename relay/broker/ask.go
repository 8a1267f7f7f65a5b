package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// ErrNoTunnel means no agent tunnel of the connection is up on this node;
// the caller explains why (never connected, offline, bad token).
var ErrNoTunnel = errors.New("no agent tunnel is up")

// Stream is a stream to the agent after an ok result, ready for the data
// phase. Close releases its slot in the session's stream count; CloseWrite
// half-closes.
type Stream struct {
	*tunnel.Stream
	release func()
}

// Close ends the stream and frees its slot.
func (s *Stream) Close() error {
	err := s.Stream.Close()
	s.release()
	return err
}

// Ask opens a stream on one of the connection's tunnels, sends req with
// its deadline set from timeout, and reads the agent's result. Opening
// falls back to the next tunnel while nothing has reached an agent. On an
// ok result the stream is returned open, holding its slot until closed;
// anything else is the refusal to answer with, a *protocol.Error, or
// ErrNoTunnel. A caller that goes away ends the wait at once.
func (b *Broker) Ask(ctx context.Context, connID string, req protocol.Request, timeout time.Duration) (*Stream, protocol.Result, error) {
	return b.AskOn(ctx, b.Candidates(connID), req, timeout)
}

// AskOn is Ask over the sessions given, in their order.
func (b *Broker) AskOn(ctx context.Context, cands []*Session, req protocol.Request, timeout time.Duration) (*Stream, protocol.Result, error) {
	if len(cands) == 0 {
		return nil, protocol.Result{}, ErrNoTunnel
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	req.DeadlineUnixMS = deadline.UnixMilli()

	busy := 0
	var lastErr error
	for _, sess := range cands {
		if sess.Active() >= int64(b.cfg.MaxStreamsPerTunnel) {
			busy++
			continue
		}
		st, release, err := sess.open(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		s, res, err := exchange(ctx, st, req, timeout)
		if err != nil {
			_ = st.Close()
			release()
			if errors.Is(err, errNotSent) || errors.Is(err, errLost) {
				lastErr = err
				continue // nothing reached the agent, or its tunnel went before it answered
			}
			return nil, res, err
		}
		return &Stream{Stream: s, release: release}, res, nil
	}
	return nil, protocol.Result{}, b.noStream(ctx, busy, lastErr)
}

// errNotSent marks a request that never reached the agent; errLost one
// whose tunnel ended before the agent answered. Either may go to the next
// tunnel: nothing of the data phase has happened, and a dial the agent
// may have made is closed with its tunnel.
var (
	errNotSent = errors.New("request not sent")
	errLost    = errors.New("the tunnel ended before the agent answered")
)

// exchange writes the request on st and reads the result.
func exchange(ctx context.Context, st *tunnel.Stream, req protocol.Request, timeout time.Duration) (*tunnel.Stream, protocol.Result, error) {
	deadline, _ := ctx.Deadline()
	_ = st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, protocol.FrameRequest, req); err != nil {
		return nil, protocol.Result{}, fmt.Errorf("%w: %v", errNotSent, err)
	}
	res, err := protocol.ReadResult(st)
	if err != nil {
		// The stream deadline and the context share one instant; either
		// may be noticed first.
		var ne net.Error
		switch {
		case ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()):
			return nil, res, protocol.Errorf(protocol.ConnectTimeout, "agent did not answer within %s", timeout)
		case tunnel.Lost(err):
			return nil, res, fmt.Errorf("%w: %v", errLost, err)
		}
		return nil, res, protocol.Errorf(protocol.ProtocolError, "read agent result: %v", err)
	}
	boundResult(&res)
	if !res.OK {
		e := protocol.Errorf(res.Reason, "%s", res.Message)
		e.RetryAfter = res.RetryAfterSeconds
		return nil, res, e
	}
	_ = st.SetDeadline(time.Time{})
	return st, res, nil
}

// noStream explains why no tunnel took the stream.
func (b *Broker) noStream(ctx context.Context, busy int, lastErr error) error {
	if busy > 0 && lastErr == nil {
		e := protocol.Errorf(protocol.AgentBusy, "every tunnel has %d streams open", b.cfg.MaxStreamsPerTunnel)
		e.RetryAfter = 1
		return e
	}
	if ctx.Err() != nil {
		return protocol.Errorf(protocol.ConnectTimeout, "opening a stream to the agent timed out")
	}
	return fmt.Errorf("%w: no tunnel took the stream: %v", ErrNoTunnel, lastErr)
}

// Abort ends the tunnel the stream runs on: its writes stopped making
// progress, so the tunnel no longer drains and every stream on it is
// stuck; the agent reconnects.
func (s *Stream) Abort() { _ = s.Session().Close() }

// Bounds on what an agent's result frame carries on to the product, the
// API and the logs.
const (
	// MaxRetryAfter bounds the pause an agent's result may ask of the
	// product, in seconds.
	MaxRetryAfter = 3600
	maxCheckSteps = 16
	maxStepLen    = 32
)

// boundResult makes an agent's result safe to pass on: a refusal's reason
// is a reason code in form (an unknown one passes on unchanged, spec
// section 11; a malformed or missing one becomes PROTOCOL_ERROR), and its
// text is cut to MaxText.
func boundResult(res *protocol.Result) {
	if !res.OK && !reasonCode.MatchString(string(res.Reason)) {
		res.Message = "the agent answered with a malformed reason code: " + res.Message
		res.Reason = protocol.ProtocolError
	}
	res.Message = clip(res.Message, MaxText)
	res.Addr = clip(res.Addr, maxRuleHostLen)
	res.Rule = clip(res.Rule, MaxText)
	res.RetryAfterSeconds = min(max(res.RetryAfterSeconds, 0), MaxRetryAfter)
	if res.Check == nil {
		return
	}
	c := res.Check
	c.Reason = boundReason(c.Reason)
	c.ProviderErrorCode = clip(c.ProviderErrorCode, maxStepLen*2)
	c.RetryAfterSeconds = min(max(c.RetryAfterSeconds, 0), MaxRetryAfter)
	c.Steps = c.Steps[:min(len(c.Steps), maxCheckSteps)]
	for i := range c.Steps {
		st := &c.Steps[i]
		st.Step, st.Detail, st.Reason = clip(st.Step, maxStepLen), clip(st.Detail, MaxText), boundReason(st.Reason)
	}
}

// boundReason keeps a reason code in form, or PROTOCOL_ERROR.
func boundReason(r protocol.Reason) protocol.Reason {
	if r == protocol.ReasonUnknown || reasonCode.MatchString(string(r)) {
		return r
	}
	return protocol.ProtocolError
}
