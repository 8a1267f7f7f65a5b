package tunnel

import (
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
