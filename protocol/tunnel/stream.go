package tunnel

import (
	"errors"
	"io"

	"github.com/postern/postern/protocol/tunnel/mux"
)

// Stream is one stream of a session.
//
// Its Close sends FIN and is therefore a write-side close: reading goes on
// until the peer's FIN, which is the half-close the data phase needs.
// CloseWrite, the multiplexer's, is the same call under the name Splice
// looks for.
type Stream struct {
	*mux.Stream
	sess *Session
}

// Session is the tunnel the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// ErrStreamReset is a stream the peer reset: one it refused, or one it
// ended without finishing.
var ErrStreamReset = mux.ErrConnectionReset

// Lost reports whether err, from a read or write on a Stream, means the
// stream was reset or its session ended under it (the tunnel went away),
// as opposed to something the peer said or a deadline.
func Lost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, mux.ErrConnectionReset) || errors.Is(err, mux.ErrSessionShutdown) ||
		errors.Is(err, mux.ErrStreamClosed) || errors.Is(err, mux.ErrConnectionWriteTimeout)
}
