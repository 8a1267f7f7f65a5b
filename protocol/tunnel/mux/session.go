// Package mux multiplexes streams over one byte stream in the yamux wire
// format, protocol version 0 (spec.md section 4.1), so either end talks to
// a peer that runs HashiCorp's yamux and the bytes on the wire are the same.
//
// It differs from that implementation in how it spends a tunnel's memory
// and wake-ups, which at a relay holding thousands of idle tunnels and at
// every request of a busy one is most of the cost:
//
//   - A session has one goroutine, the receive loop. Writers send their
//     frames themselves, serialized by a lock, instead of handing each
//     frame to a send loop and waiting for its answer: two goroutine
//     switches fewer per write.
//   - Nothing in the receive loop ever waits to write (see control), so two
//     ends blocked on full sockets cannot wait on each other.
//   - Received data waits in pooled buffers of the frame's size, handed
//     back as it is read; an idle stream holds none. The receive loop
//     reads headers through the connection itself, with no reader of its
//     own.
//   - A ping's answer is a callback (PingThen), so a keepalive parks no
//     goroutine while it waits.
//   - A stream's bytes can go from the receive loop straight to where its
//     reader would copy them (Stream.DeliverDirect), while that reader
//     waits: a request or an answer then wakes no goroutine on arrival.
//   - An open that is not acknowledged in time ends the session, and every
//     blocked write on the connection is bounded, as in yamux.
package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Frame header (spec.md 4.1): version, type, flags, stream id, length.
const (
	headerSize   = 12
	protoVersion = 0

	typeData         = 0
	typeWindowUpdate = 1
	typePing         = 2
	typeGoAway       = 3

	flagSYN = 1
	flagACK = 2
	flagFIN = 4
	flagRST = 8

	goAwayNormal = 0

	// initialWindow is every stream's receive window before its first
	// window update, fixed by the protocol.
	initialWindow = 256 << 10
)

// Errors. A stream's Read and Write return these, or io.EOF after the
// peer's FIN.
var (
	ErrSessionShutdown        = errors.New("session shutdown")
	ErrStreamClosed           = errors.New("stream closed")
	ErrConnectionReset        = errors.New("stream reset")
	ErrConnectionWriteTimeout = errors.New("connection write timeout")
	ErrKeepAliveTimeout       = errors.New("keepalive timeout")
	ErrRemoteGoAway           = errors.New("remote end is not accepting connections")
	ErrStreamsExhausted       = errors.New("streams exhausted")
	ErrOpenTimeout            = errors.New("stream open not acknowledged in time")
	// ErrProtocol is a frame no peer may send; the session ends with it.
	ErrProtocol = errors.New("multiplexer protocol violation")
	// ErrTimeout is a stream deadline that passed. It is a net.Error
	// whose Timeout is true and it matches os.ErrDeadlineExceeded.
	ErrTimeout error = timeoutError{}
)

type timeoutError struct{}

func (timeoutError) Error() string        { return "i/o deadline reached" }
func (timeoutError) Timeout() bool        { return true }
func (timeoutError) Temporary() bool      { return true }
func (timeoutError) Is(target error) bool { return target == errDeadline }

// Config is a session's settings; every field must be set.
type Config struct {
	// AcceptBacklog is how many streams the peer opened may wait to be
	// accepted; one more is reset.
	AcceptBacklog int
	// WriteTimeout bounds every write on the connection: one that makes
	// no progress for this long ends the session.
	WriteTimeout time.Duration
	// StreamOpenTimeout ends the session when the peer does not
	// acknowledge a stream this end opened within it.
	StreamOpenTimeout time.Duration
	// MaxStreamWindow is the largest receive window of a stream, at least
	// 256 KiB.
	MaxStreamWindow uint32
	// AckHold, when positive, holds an accepted stream's acknowledgement
	// back to leave in one write with the stream's first frame back (an
	// answer, a FIN), for at most this long; it leaves at once when the
	// stream's reader waits. It must stay well under the peer's
	// StreamOpenTimeout.
	AckHold time.Duration
	// Logger, when set, receives at debug level why a session ended when
	// that was not this end's Close.
	Logger *slog.Logger
}

// Session is one end of a multiplexed connection.
type Session struct {
	conn net.Conn
	cfg  Config

	// wmu serializes frames on conn; hdr and wdl belong to it.
	wmu sync.Mutex
	hdr [headerSize]byte
	wdl time.Time // the write deadline set on conn

	mu           sync.Mutex
	streams      map[uint32]*Stream
	nextID       uint32
	accepts      []*Stream // opened by the peer, not yet accepted
	localGoAway  bool      // the peer was told: its new streams are reset
	refusing     bool      // RefuseStreams: likewise, untold
	remoteGoAway bool
	pingID       uint32
	pings        map[uint32]*ping

	acceptWake chan struct{} // cap 1: the accept queue grew
	controls   chan struct{} // bounds the control writes under way (see control)

	closed    chan struct{}
	closeOnce sync.Once
	err       error // why the session ended; set before closed closes
	isClosed  atomic.Bool

	born  time.Time    // when the session started, on the monotonic clock
	heard atomic.Int64 // when the last frame came, as time since born
}

// Client starts the side of a session that opens odd stream ids.
func Client(conn net.Conn, cfg Config) (*Session, error) { return start(conn, cfg, 1) }

// Server starts the side of a session that opens even stream ids.
func Server(conn net.Conn, cfg Config) (*Session, error) { return start(conn, cfg, 2) }

func start(conn net.Conn, cfg Config, first uint32) (*Session, error) {
	switch {
	case cfg.AcceptBacklog < 1:
		return nil, fmt.Errorf("mux: accept backlog %d: must be at least 1", cfg.AcceptBacklog)
	case cfg.WriteTimeout <= 0 || cfg.StreamOpenTimeout <= 0:
		return nil, errors.New("mux: write and open timeouts must be positive")
	case cfg.MaxStreamWindow < initialWindow:
		return nil, fmt.Errorf("mux: stream window %d: must be at least %d", cfg.MaxStreamWindow, initialWindow)
	}
	s := &Session{
		conn:       conn,
		cfg:        cfg,
		streams:    make(map[uint32]*Stream, 1),
		nextID:     first,
		acceptWake: make(chan struct{}, 1),
		controls:   make(chan struct{}, maxControls),
		closed:     make(chan struct{}),
		born:       time.Now(),
	}
	go s.recvLoop()
	return s, nil
}

// Open opens a stream and announces it to the peer at once. It does not
// wait for the peer's acknowledgement; when that does not come within
// StreamOpenTimeout, the session ends.
func (s *Session) Open() (*Stream, error) {
	st, err := s.OpenLazy()
	if err != nil {
		return nil, err
	}
	if err := st.flushUnsent(); err != nil {
		st.finish()
		return nil, err
	}
	return st, nil
}

// OpenLazy opens a stream whose opening (SYN) leaves with the stream's
// first frame, in one write with it, or when its reader first waits for
// the peer; an opener that writes a request at once saves a write at each
// end. A stream reset before either never reaches the peer. When the
// peer's acknowledgement does not come within StreamOpenTimeout of the
// opening, the session ends.
func (s *Session) OpenLazy() (*Stream, error) {
	s.mu.Lock()
	switch {
	case s.isClosed.Load():
		s.mu.Unlock()
		return nil, ErrSessionShutdown
	case s.remoteGoAway:
		s.mu.Unlock()
		return nil, ErrRemoteGoAway
	case s.nextID >= 1<<32-2:
		s.mu.Unlock()
		return nil, ErrStreamsExhausted
	}
	id := s.nextID
	s.nextID += 2
	st := newStream(s, id, stateOpening)
	st.unsent.Store(uint32(flagSYN))
	s.streams[id] = st
	s.mu.Unlock()
	return st, nil
}

// Accept waits for the next stream the peer opens and acknowledges it.
func (s *Session) Accept() (*Stream, error) { return s.AcceptContext(context.Background()) }

// AcceptContext is Accept that gives up when ctx ends, with ctx's error.
func (s *Session) AcceptContext(ctx context.Context) (*Stream, error) {
	for {
		s.mu.Lock()
		if len(s.accepts) > 0 {
			st := s.accepts[0]
			s.accepts[0] = nil
			s.accepts = s.accepts[1:]
			if len(s.accepts) == 0 {
				s.accepts = nil // let a drained backlog go
			} else {
				wake(s.acceptWake) // for another Accept
			}
			s.mu.Unlock()
			st.unsent.Store(uint32(flagACK))
			if s.cfg.AckHold > 0 {
				st.mu.Lock()
				st.ackTimer = time.AfterFunc(s.cfg.AckHold, func() { _ = st.flushUnsent() })
				st.mu.Unlock()
				return st, nil
			}
			if err := st.flushUnsent(); err != nil {
				return nil, err
			}
			return st, nil
		}
		s.mu.Unlock()
		select {
		case <-s.acceptWake:
		case <-s.closed:
			return nil, s.shutdownErr()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// GoAway tells the peer that this end accepts no more streams; those it
// opens after are reset.
func (s *Session) GoAway() error {
	s.mu.Lock()
	s.localGoAway = true
	s.mu.Unlock()
	return s.writeFrame(typeGoAway, 0, 0, goAwayNormal, nil)
}

// RefuseStreams resets every stream the peer opened that is not yet
// accepted, and every one it opens from now on, without telling it to
// stop as GoAway does. An end that accepts nothing more needs no
// goroutine waiting in Accept to turn streams away; Accept then waits
// until the session ends.
func (s *Session) RefuseStreams() error {
	s.mu.Lock()
	s.refusing = true
	waiting := s.accepts
	s.accepts = nil
	for _, st := range waiting {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
	for _, st := range waiting {
		if err := s.writeFrame(typeWindowUpdate, flagRST, st.id, 0, nil); err != nil {
			return err
		}
	}
	return nil
}

// Close ends the session and every stream in it. It is idempotent.
func (s *Session) Close() error {
	s.closeWith(ErrSessionShutdown)
	return nil
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.isClosed.Load() }

// SinceHeard is how long ago the peer's last frame arrived, or the
// session started if none has.
func (s *Session) SinceHeard() time.Duration {
	return time.Since(s.born) - time.Duration(s.heard.Load())
}

// CloseChan is closed when the session ends.
func (s *Session) CloseChan() <-chan struct{} { return s.closed }

// Err is why the session ended, or nil while it lives.
func (s *Session) Err() error {
	if !s.isClosed.Load() {
		return nil
	}
	return s.err
}

// NumStreams is how many streams are open, accepted or not.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// shutdownErr is what work on an ended session returns: ErrSessionShutdown,
// or the write timeout that ended it.
func (s *Session) shutdownErr() error {
	if errors.Is(s.err, ErrConnectionWriteTimeout) {
		return ErrConnectionWriteTimeout
	}
	return ErrSessionShutdown
}

func (s *Session) closeWith(err error) {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.err = err
		if err != ErrSessionShutdown && s.cfg.Logger != nil {
			s.cfg.Logger.Debug("multiplexed session ended", "err", err)
		}
		s.isClosed.Store(true)
		close(s.closed)
	})
	if !first {
		return
	}
	// Outside the once: what follows may call back into Close.
	_ = s.conn.Close()
	s.mu.Lock()
	streams := s.streams
	s.streams = map[uint32]*Stream{}
	s.accepts = nil
	s.mu.Unlock()
	for _, st := range streams {
		st.sessionEnded()
	}
	s.endPings()
}

// forget drops a stream from the session.
func (s *Session) forget(st *Stream) {
	s.mu.Lock()
	if s.streams[st.id] == st {
		delete(s.streams, st.id)
	}
	s.mu.Unlock()
}

// writeFrame sends one frame: its header, then body (the length of a
// data frame). A write that fails ends the session: the frame may be cut.
func (s *Session) writeFrame(typ byte, flags uint16, id, length uint32, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(typ, flags, id, length, body)
}

// writeLocked is writeFrame under wmu.
func (s *Session) writeLocked(typ byte, flags uint16, id, length uint32, body []byte) error {
	if s.isClosed.Load() {
		return s.shutdownErr()
	}
	putHeader(s.hdr[:], typ, flags, id, length)
	s.extendWriteDeadline()
	_, err := s.conn.Write(s.hdr[:])
	if err == nil && len(body) > 0 {
		_, err = s.conn.Write(body)
	}
	return s.writeErr(err)
}

// maxJoined is the largest body writeAfter copies behind the held
// window update and its own header, so that both frames leave in one
// write; a larger body goes in writes of its own, as writeFrame sends it.
const maxJoined = 16 << 10

// writeAfter sends a window update of the stream's (the acknowledgement
// or opening it held back, with its window) and then the frame given, in
// one write to the connection when the frame's body is small. The bytes
// are those of the two frames sent one after the other. Called under wmu.
func (s *Session) writeAfter(wflags uint16, delta uint32, typ byte, flags uint16, id, length uint32, body []byte) error {
	if len(body) > maxJoined {
		if err := s.writeLocked(typeWindowUpdate, wflags, id, delta, nil); err != nil {
			return err
		}
		return s.writeLocked(typ, flags, id, length, body)
	}
	if s.isClosed.Load() {
		return s.shutdownErr()
	}
	bp := getChunk(2*headerSize + len(body))
	b := (*bp)[:2*headerSize+len(body)]
	putHeader(b, typeWindowUpdate, wflags, id, delta)
	putHeader(b[headerSize:], typ, flags, id, length)
	copy(b[2*headerSize:], body)
	s.extendWriteDeadline()
	_, err := s.conn.Write(b)
	putChunk(bp)
	return s.writeErr(err)
}

func putHeader(b []byte, typ byte, flags uint16, id, length uint32) {
	b[0], b[1] = protoVersion, typ
	binary.BigEndian.PutUint16(b[2:4], flags)
	binary.BigEndian.PutUint32(b[4:8], id)
	binary.BigEndian.PutUint32(b[8:12], length)
}

// writeErr ends the session after a failed write and says why.
func (s *Session) writeErr(err error) error {
	if err != nil {
		if errors.Is(err, errDeadline) {
			s.closeWith(ErrConnectionWriteTimeout)
			return ErrConnectionWriteTimeout
		}
		s.closeWith(fmt.Errorf("%w: write: %w", ErrSessionShutdown, err))
		return s.shutdownErr()
	}
	return nil
}

// deadlineSlack is how stale the connection's write deadline may grow
// before a write moves it, at most: setting it costs a timer update, so it
// moves at most this often (or every tenth of WriteTimeout, when that is
// shorter), and a write is bounded by between WriteTimeout minus the
// slack and WriteTimeout.
const deadlineSlack = time.Second

// extendWriteDeadline keeps a deadline on conn of about WriteTimeout from
// now. Called under wmu.
func (s *Session) extendWriteDeadline() {
	now := time.Now()
	if s.wdl.Sub(now) > s.cfg.WriteTimeout-min(deadlineSlack, s.cfg.WriteTimeout/10) {
		return
	}
	s.wdl = now.Add(s.cfg.WriteTimeout)
	_ = s.conn.SetWriteDeadline(s.wdl)
}

// maxControls bounds the frames the receive loop has sent off to be
// written and are not yet: answers to pings, resets of refused streams.
// A peer that asks for more at once than this loses the rest, as it
// would with a yamux peer whose send queue is full.
const maxControls = 16

// control writes a frame the receive loop owes the peer without the
// loop's waiting for it: were the loop to block on a full socket while
// the peer's loop did the same, neither would read again.
func (s *Session) control(typ byte, flags uint16, id, length uint32) {
	select {
	case s.controls <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-s.controls }()
		_ = s.writeFrame(typ, flags, id, length, nil)
	}()
}

// recvLoop reads frames until the connection ends.
func (s *Session) recvLoop() {
	var hdr [headerSize]byte
	for {
		if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
			s.closeWith(fmt.Errorf("%w: read: %w", ErrSessionShutdown, err))
			return
		}
		s.heard.Store(int64(time.Since(s.born)))
		typ, flags := hdr[1], binary.BigEndian.Uint16(hdr[2:4])
		id, length := binary.BigEndian.Uint32(hdr[4:8]), binary.BigEndian.Uint32(hdr[8:12])
		var err error
		switch {
		case hdr[0] != protoVersion:
			err = fmt.Errorf("%w: version %d", ErrProtocol, hdr[0])
		case typ == typeData || typ == typeWindowUpdate:
			err = s.streamFrame(typ, flags, id, length)
		case typ == typePing:
			s.pingFrame(flags, length)
		case typ == typeGoAway:
			s.mu.Lock()
			s.remoteGoAway = true
			s.mu.Unlock()
		default:
			err = fmt.Errorf("%w: frame type %d", ErrProtocol, typ)
		}
		if err != nil {
			// A peer that breaks the protocol is cut off: no go away
			// first, which it might not read and would not heed.
			s.closeWith(err)
			return
		}
	}
}

// streamFrame handles a data or window update frame.
func (s *Session) streamFrame(typ byte, flags uint16, id, length uint32) error {
	if flags&flagSYN != 0 {
		if err := s.incoming(id); err != nil {
			return err
		}
	}
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil {
		// A stream already gone, or one refused: skip what it carries.
		if typ == typeData && length > 0 {
			if _, err := io.CopyN(io.Discard, s.conn, int64(length)); err != nil {
				return fmt.Errorf("%w: read: %w", ErrSessionShutdown, err)
			}
		}
		return nil
	}
	if typ == typeWindowUpdate {
		st.windowUpdate(flags, length)
		return nil
	}
	return st.data(flags, length)
}

// incoming registers a stream the peer opens, or resets it when this end
// goes away or the backlog is full.
func (s *Session) incoming(id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed.Load() {
		return nil // ending: the stream would outlive its session's cleanup
	}
	if id%2 == s.nextID%2 || id == 0 {
		return fmt.Errorf("%w: the peer opened stream %d, an id of this end's", ErrProtocol, id)
	}
	if _, dup := s.streams[id]; dup {
		return fmt.Errorf("%w: stream %d opened twice", ErrProtocol, id)
	}
	if s.localGoAway || s.refusing || len(s.accepts) >= s.cfg.AcceptBacklog {
		s.control(typeWindowUpdate, flagRST, id, 0)
		return nil
	}
	st := newStream(s, id, 0)
	s.streams[id] = st
	s.accepts = append(s.accepts, st)
	wake(s.acceptWake)
	return nil
}
