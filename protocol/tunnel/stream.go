package tunnel

import (
	"errors"
	"io"

	"github.com/hashicorp/yamux"
)

// Stream is one yamux stream of a session.
//
// Its Close sends FIN and is therefore a write-side close: reading goes on
// until the peer's FIN, which is the half-close the data phase needs.
// CloseWrite is the same call under the name Splice looks for.
type Stream struct {
	*yamux.Stream
	sess *Session
}

// CloseWrite half-closes the stream (FIN); the other direction keeps
// flowing.
func (s *Stream) CloseWrite() error { return s.Stream.Close() }

// Session is the tunnel the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// Lost reports whether err, from a read or write on a Stream, means the
// stream was reset or its session ended under it (the tunnel went away),
// as opposed to something the peer said or a deadline.
func Lost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, yamux.ErrConnectionReset) || errors.Is(err, yamux.ErrSessionShutdown) ||
		errors.Is(err, yamux.ErrStreamClosed)
}
