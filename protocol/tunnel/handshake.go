package tunnel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/postern/postern/protocol/tunnel/mux"

	"github.com/postern/postern/protocol"
)

// DefaultHeartbeat is the Health period an agent uses when a Welcome names
// none.
const DefaultHeartbeat = 15 * time.Second

// ErrBadWelcome is a Welcome frame that does not decode: the relay speaks
// another revision of the protocol.
var ErrBadWelcome = errors.New("bad welcome")

// NoticeError is a frame other than Welcome answering Hello: a relay
// notice (Revoked: the connection is gone; GoAway: the node is draining),
// or a frame a relay never sends there.
type NoticeError struct {
	Type protocol.FrameType
	// Message is the notice's message, if it has one.
	Message string
}

func (e *NoticeError) Error() string {
	msg := fmt.Sprintf("relay answered %s instead of welcome", e.Type)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Hello opens the control stream, sends hello and reads the relay's
// Welcome, all before ctx's deadline. A Revoked or GoAway in place of
// Welcome comes back as *NoticeError.
func (s *Session) Hello(ctx context.Context, hello protocol.Hello) (protocol.Welcome, error) {
	ctrl, err := s.mux.Open()
	if err != nil {
		return protocol.Welcome{}, fmt.Errorf("open control stream: %w", err)
	}
	s.ctrl = ctrl
	stop := bindDeadline(ctx, ctrl)
	defer stop()
	sendErr := protocol.WriteFrame(ctrl, protocol.FrameHello, hello)
	if sendErr != nil && !errors.Is(sendErr, mux.ErrSessionShutdown) {
		return protocol.Welcome{}, fmt.Errorf("send hello: %w", sendErr)
	}
	// A relay that answers and hangs up at once (a probe's Welcome, a
	// refusal) can end the session before this side learns its write went
	// out; what it answered is still buffered, so read it before giving up.
	f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
	if err != nil {
		if sendErr != nil {
			return protocol.Welcome{}, fmt.Errorf("send hello: %w", sendErr)
		}
		return protocol.Welcome{}, fmt.Errorf("read welcome: %w", err)
	}
	if f.Type != protocol.FrameWelcome {
		return protocol.Welcome{}, noticeOf(f)
	}
	var w protocol.Welcome
	if err := f.Decode(protocol.FrameWelcome, &w); err != nil {
		return protocol.Welcome{}, fmt.Errorf("%w: %v", ErrBadWelcome, err)
	}
	if w.HeartbeatMS <= 0 {
		w.HeartbeatMS = DefaultHeartbeat.Milliseconds()
	}
	return w, nil
}

func noticeOf(f protocol.Frame) *NoticeError {
	e := &NoticeError{Type: f.Type}
	switch f.Type {
	case protocol.FrameRevoked:
		var r protocol.Revoked
		_ = f.Decode(protocol.FrameRevoked, &r)
		e.Message = r.Message
	case protocol.FrameGoAway:
		var g protocol.GoAway
		_ = f.Decode(protocol.FrameGoAway, &g)
		e.Message = g.Message
	}
	return e
}

// Welcomer answers a Hello with the Welcome to send, or refuses it.
type Welcomer func(protocol.Hello) (protocol.Welcome, error)

// HelloDecoder decodes the Hello frame. A relay gives its own to bound
// what decoding may cost before anything is built from the frame.
type HelloDecoder func(protocol.Frame) (protocol.Hello, error)

// AcceptHello accepts the control stream, reads Hello and answers with what
// welcome returns, all before ctx's deadline. When welcome refuses, nothing
// is answered and its error is returned; the control stream stays open
// for a notice (Send) until the session is closed.
func (s *Session) AcceptHello(ctx context.Context, welcome Welcomer) (protocol.Hello, error) {
	return s.AcceptHelloWith(ctx, protocol.MaxControlFrame, decodeHello, welcome)
}

func decodeHello(f protocol.Frame) (protocol.Hello, error) {
	var hello protocol.Hello
	err := f.Decode(protocol.FrameHello, &hello)
	return hello, err
}

// AcceptHelloWith is AcceptHello with the receiver's own bounds: a Hello
// body over maxBody bytes is refused unread (ErrOverLimit), and the frame
// is decoded by decode.
func (s *Session) AcceptHelloWith(ctx context.Context, maxBody int, decode HelloDecoder, welcome Welcomer) (protocol.Hello, error) {
	ctrl, err := s.mux.AcceptContext(ctx)
	if err != nil {
		return protocol.Hello{}, fmt.Errorf("accept control stream: %w", err)
	}
	s.ctrl = ctrl
	stop := bindDeadline(ctx, ctrl)
	defer stop()
	f, err := readBounded(ctrl, func(protocol.FrameType) int { return maxBody })
	if err != nil {
		return protocol.Hello{}, fmt.Errorf("read hello: %w", err)
	}
	hello, err := decode(f)
	if err != nil {
		return protocol.Hello{}, err
	}
	w, err := welcome(hello)
	if err != nil {
		return hello, err
	}
	if err := protocol.WriteFrame(ctrl, protocol.FrameWelcome, w); err != nil {
		return hello, fmt.Errorf("write welcome: %w", err)
	}
	return hello, nil
}

// deadliner is a stream with deadlines.
type deadliner interface{ SetDeadline(time.Time) error }

// bindDeadline puts ctx's deadline on d and ends d's blocked calls when ctx
// ends; stop clears both.
func bindDeadline(ctx context.Context, d deadliner) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		_ = d.SetDeadline(dl)
	}
	cancel := context.AfterFunc(ctx, func() { _ = d.SetDeadline(time.Now()) })
	return func() {
		cancel()
		_ = d.SetDeadline(time.Time{})
	}
}
