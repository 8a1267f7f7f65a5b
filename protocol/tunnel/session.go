package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel/mux"
)

// ErrWriteTimeout ends a session whose writes made no progress for the
// config's WriteTimeout: the tunnel no longer drains, and every stream on
// it is cut. A splice that fails with it should close the whole session so
// the agent reconnects, rather than leave other streams hung on it.
var ErrWriteTimeout = mux.ErrConnectionWriteTimeout

// ErrSessionShutdown is returned by work on a session that has ended.
var ErrSessionShutdown = mux.ErrSessionShutdown

// Session is one tunnel: a yamux session on a WebSocket, with the control
// stream once the handshake has run. The agent is the yamux client and the
// relay the server (spec.md 4.1).
type Session struct {
	mux *mux.Session
	ka  *keepAlive // nil without keepalive

	ctrl   *mux.Stream
	ctrlMu sync.Mutex // serializes frames written on ctrl
}

// Client runs the agent's side of a session on conn.
func Client(conn net.Conn, cfg Config) (*Session, error) {
	return newSession(conn, cfg, mux.Client, "yamux client")
}

// Server runs the relay's side of a session on conn. It knows nothing of
// HTTP: conn comes from Upgrade, or from any other byte stream.
func Server(conn net.Conn, cfg Config) (*Session, error) {
	return newSession(conn, cfg, mux.Server, "yamux server")
}

// newSession runs one side of a session: start is mux.Client or
// mux.Server, named by side in errors.
func newSession(conn net.Conn, cfg Config, start func(net.Conn, mux.Config) (*mux.Session, error), side string) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := start(conn, cfg.mux())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", side, err)
	}
	s := &Session{mux: m}
	if cfg.KeepAlive {
		s.ka = startKeepAlive(m, conn, cfg.KeepAliveInterval)
	}
	return s, nil
}

// Open opens a stream to the peer. The opening leaves with the stream's
// first frame, the request, in one write (see mux.Session.OpenLazy), or
// when its reader first waits. Opening does not wait for the peer's answer
// (a session whose peer leaves it unanswered ends after
// StreamOpenTimeout), so ctx is only checked before.
func (s *Session) Open(ctx context.Context) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := s.mux.OpenLazy()
	if err != nil {
		return nil, s.ka.cause(err)
	}
	return &Stream{Stream: st, sess: s}, nil
}

// Accept waits for the next stream the peer opens.
func (s *Session) Accept() (*Stream, error) {
	st, err := s.mux.Accept()
	if err != nil {
		return nil, s.ka.cause(err)
	}
	return &Stream{Stream: st, sess: s}, nil
}

// Send writes one frame on the control stream, serialized with other
// senders; the write must finish within the given time.
func (s *Session) Send(t protocol.FrameType, v any, within time.Duration) error {
	if s.ctrl == nil {
		return errNoControl
	}
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	_ = s.ctrl.SetWriteDeadline(time.Now().Add(within))
	return protocol.WriteFrame(s.ctrl, t, v)
}

// Recv reads the next control frame; a zero timeout waits as long as the
// session lives.
func (s *Session) Recv(timeout time.Duration) (protocol.Frame, error) {
	if err := s.readWithin(timeout); err != nil {
		return protocol.Frame{}, err
	}
	f, err := protocol.ReadFrame(s.ctrl, protocol.MaxControlFrame)
	return f, s.ka.cause(err)
}

// OnControl has fn called when the control stream may hold a frame to
// read, or has ended (mux.Stream.OnReadable): a receiver can then read
// with a goroutine that runs only while frames arrive, instead of one
// parked in Recv for the tunnel's life. fn runs on the session's receive
// loop and must not block.
func (s *Session) OnControl(fn func()) error {
	if s.ctrl == nil {
		return errNoControl
	}
	s.ctrl.OnReadable(fn)
	return nil
}

// ControlReadable reports whether reading the control stream would find
// bytes, or its end, without waiting. A frame partly arrived counts: its
// reader waits for the rest.
func (s *Session) ControlReadable() bool { return s.ctrl != nil && s.ctrl.Readable() }

// readWithin sets the control stream's read deadline timeout from now;
// zero clears it.
func (s *Session) readWithin(timeout time.Duration) error {
	if s.ctrl == nil {
		return errNoControl
	}
	var dl time.Time
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	_ = s.ctrl.SetReadDeadline(dl)
	return nil
}

var errNoControl = errors.New("tunnel: no control stream (handshake not run)")

// ErrOverLimit is a control frame whose body is larger than its reader's
// own limit for its type (RecvBounded), though within the protocol's cap.
// Its body was skipped, never held; the session can go on.
var ErrOverLimit = errors.New("control frame over the receiver's limit")

// BodyLimit gives the most body bytes a receiver takes in a control frame
// of type t; a larger body is skipped.
type BodyLimit func(t protocol.FrameType) int

// RecvBounded is Recv with the receiver's own limit on each frame type's
// body, below protocol.MaxControlFrame: a frame over it comes back with
// its type, no body and an error wrapping ErrOverLimit, after its body
// was read past in small pieces. A receiver that ignores some frames
// (unknown types) thus never holds one, however large.
func (s *Session) RecvBounded(timeout time.Duration, limit BodyLimit) (protocol.Frame, error) {
	if err := s.readWithin(timeout); err != nil {
		return protocol.Frame{}, err
	}
	f, err := readBounded(s.ctrl, limit)
	return f, s.ka.cause(err)
}

// readBounded reads one control frame, holding its body only when limit
// allows it.
func readBounded(r io.Reader, limit BodyLimit) (protocol.Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return protocol.Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	switch {
	case n == 0:
		return protocol.Frame{}, protocol.ErrFrameEmpty
	case n > protocol.MaxControlFrame:
		return protocol.Frame{}, fmt.Errorf("%w: %d > %d bytes", protocol.ErrFrameTooLarge, n, protocol.MaxControlFrame)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return protocol.Frame{}, io.ErrUnexpectedEOF
	}
	t, body := protocol.FrameType(hdr[4]), int64(n)-1
	if most := int64(limit(t)); body > most {
		if _, err := io.CopyN(io.Discard, r, body); err != nil {
			return protocol.Frame{}, io.ErrUnexpectedEOF
		}
		return protocol.Frame{Type: t}, fmt.Errorf("%w: %s body of %d bytes, more than %d", ErrOverLimit, t, body, most)
	}
	buf := make([]byte, body)
	if _, err := io.ReadFull(r, buf); err != nil {
		return protocol.Frame{}, io.ErrUnexpectedEOF
	}
	return protocol.Frame{Type: t, Body: buf}, nil
}

// GoAway tells the peer that this end accepts no new streams (a yamux go
// away, not the Postern GoAway notice).
func (s *Session) GoAway() error { return s.mux.GoAway() }

// RefuseStreams resets every stream the peer opens that was not accepted
// yet, and every later one, with no goroutine waiting to turn them away.
func (s *Session) RefuseStreams() error { return s.mux.RefuseStreams() }

// Close ends the session and every stream in it. It is idempotent.
func (s *Session) Close() error {
	if s.ka != nil {
		s.ka.stop()
	}
	return s.mux.Close()
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.mux.IsClosed() }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Ping measures one round trip on the session.
func (s *Session) Ping() (time.Duration, error) { return s.mux.Ping() }
