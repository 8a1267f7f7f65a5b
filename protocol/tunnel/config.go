package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/postern/postern/protocol/tunnel/mux"
)

// Defaults of the yamux session, as spec.md section 4 states them.
const (
	// KeepAliveInterval is how long after an answered ping the next is sent.
	KeepAliveInterval = 5 * time.Second
	// WriteTimeout bounds every blocked write and the wait for a ping's
	// answer: a dead peer is noticed within KeepAliveInterval+WriteTimeout.
	WriteTimeout = 10 * time.Second
	// StreamOpenTimeout is how long a stream's opening may go
	// unacknowledged before the peer counts as gone.
	StreamOpenTimeout = 10 * time.Second
	// StreamWindow is the largest receive window per stream. It bounds
	// memory per stream and sets bulk throughput over long paths; 8 MiB
	// was measured to gain nothing on loopback and to triple memory.
	StreamWindow = 1 << 20
	// AcceptBacklog is how many opened streams may wait to be accepted;
	// at least the relay's stream cap per tunnel.
	AcceptBacklog = 512
	// AckHold is how long an accepted stream's acknowledgement may wait
	// to leave with the stream's first frame back (an agent's result), a
	// tenth of the opener's StreamOpenTimeout.
	AckHold = time.Second
)

// minStreamWindow is yamux's initial window; a smaller maximum is invalid.
const minStreamWindow = 256 << 10

// Config holds the settings of a tunnel's yamux session. Every field is
// used as given: DefaultConfig returns the protocol's values and Validate
// refuses a value that would break them rather than patching it.
type Config struct {
	// AcceptBacklog is how many opened streams may wait to be accepted.
	AcceptBacklog int
	// KeepAlive sends a ping KeepAliveInterval after the last answer and
	// ends the session when an answer takes longer than WriteTimeout.
	// Long-lived tunnels need it; a session closed right after its
	// handshake (the doctor's probe) does not.
	KeepAlive         bool
	KeepAliveInterval time.Duration
	// WriteTimeout bounds every blocked write on the session.
	WriteTimeout time.Duration
	// StreamOpenTimeout ends the session when the peer does not
	// acknowledge a stream this node opened.
	StreamOpenTimeout time.Duration
	// StreamWindow is the largest receive window of a stream, in bytes.
	StreamWindow uint32
	// AckHold, when positive, lets an accepted stream's acknowledgement
	// wait up to this long to leave with its first frame back; zero
	// acknowledges at once.
	AckHold time.Duration
	// Logger receives at debug level why a session ended, when the peer
	// or the connection ended it; nil discards that.
	Logger *slog.Logger
}

// DefaultConfig returns the settings of a long-lived tunnel.
func DefaultConfig() Config {
	return Config{
		AcceptBacklog:     AcceptBacklog,
		KeepAlive:         true,
		KeepAliveInterval: KeepAliveInterval,
		WriteTimeout:      WriteTimeout,
		StreamOpenTimeout: StreamOpenTimeout,
		StreamWindow:      StreamWindow,
		AckHold:           AckHold,
	}
}

// Validate reports every setting that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.AcceptBacklog < 1 {
		errs = append(errs, fmt.Errorf("accept backlog %d: must be at least 1", c.AcceptBacklog))
	}
	if c.KeepAlive && c.KeepAliveInterval <= 0 {
		errs = append(errs, fmt.Errorf("keepalive interval %s: must be positive", c.KeepAliveInterval))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("write timeout %s: must be positive (every write is bounded)", c.WriteTimeout))
	}
	if c.StreamOpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("stream open timeout %s: must be positive", c.StreamOpenTimeout))
	}
	if c.AckHold < 0 || c.AckHold > StreamOpenTimeout/2 {
		errs = append(errs, fmt.Errorf("ack hold %s: must be between 0 and %s, well under the peer's stream open timeout", c.AckHold, StreamOpenTimeout/2))
	}
	if c.StreamWindow < minStreamWindow {
		errs = append(errs, fmt.Errorf("stream window %d: must be at least %d bytes", c.StreamWindow, minStreamWindow))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tunnel config: %w", err)
	}
	return nil
}

// mux is the one place a session's multiplexer is configured. It has no
// keepalive of its own: the session's runs from a timer (keepAlive). No
// close timer either: a stream's Close is the Postern half-close, and a
// response may flow for as long as it needs after the request side
// finished; stuck streams end by the splice's idle and write timeouts.
func (c Config) mux() mux.Config {
	return mux.Config{
		AcceptBacklog:     c.AcceptBacklog,
		WriteTimeout:      c.WriteTimeout,
		StreamOpenTimeout: c.StreamOpenTimeout,
		MaxStreamWindow:   c.StreamWindow,
		AckHold:           c.AckHold,
		Logger:            c.Logger,
	}
}
