package mux

import (
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Stream states, as bits.
const (
	stateOpening   = 1 << iota // this end sent SYN, the ACK has not come
	stateLocalFIN              // this end sent FIN: it writes no more
	stateRemoteFIN             // the peer sent FIN: after the buffered bytes, EOF
	stateReset                 // either end reset the stream
	stateEnded                 // the session ended under the stream
)

// Stream is one stream of a session. Close sends FIN: it ends this end's
// writing only, and reading goes on until the peer's FIN.
type Stream struct {
	id   uint32
	sess *Session

	// wlock orders writers, and the FIN after the last write.
	wlock sync.Mutex

	mu         sync.Mutex
	state      int
	sendWindow uint32 // bytes this end may still send
	recvWindow uint32 // bytes the peer may still send
	recv       chunks // received and not yet read
	readDL     time.Time
	writeDL    time.Time
	readWake   chan struct{} // cap 1: data, FIN, reset, end or a new deadline
	writeWake  chan struct{} // cap 1: window, close, reset, end or a new deadline
	openTimer  *time.Timer   // while stateOpening
	ackTimer   *time.Timer   // while an acknowledgement is held back
	onReadable func()        // OnReadable's callback, or nil

	// unsent is the SYN or ACK this end holds back to send with the
	// stream's first frame (see Session.OpenLazy and Config.AckHold). It is
	// taken under the session's write lock, so that no frame of the
	// stream can overtake it.
	unsent atomic.Uint32

	// deliver is DeliverDirect's writer, or nil. parked is true while a
	// Read waits with nothing buffered; owed is window the receive loop
	// granted for bytes it delivered, which that Read sends.
	deliver func([]byte) int
	parked  bool
	owed    uint32
}

func newStream(s *Session, id uint32, state int) *Stream {
	return &Stream{
		id: id, sess: s, state: state,
		sendWindow: initialWindow, recvWindow: initialWindow,
		readWake: make(chan struct{}, 1), writeWake: make(chan struct{}, 1),
	}
}

// StreamID is the stream's id on the wire.
func (st *Stream) StreamID() uint32 { return st.id }

func (st *Stream) LocalAddr() net.Addr  { return st.sess.conn.LocalAddr() }
func (st *Stream) RemoteAddr() net.Addr { return st.sess.conn.RemoteAddr() }

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wait releases st.mu until ch is woken, the session ends or dl passes,
// and takes it again; the caller checks again what it waits for.
//
// A waiter that sees the session end marks the stream ended itself: the
// session's closer reaches each stream in turn (sessionEnded), and a
// waiter that only looked again would find the stream not yet ended and
// the session's channel still closed, and spin until then. With
// thousands of sessions ending at once, the spinning starved the closers
// for a minute.
func (st *Stream) wait(ch chan struct{}, dl time.Time) {
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	st.mu.Unlock()
	ended := false
	select {
	case <-ch:
	case <-st.sess.closed:
		ended = true
	case <-timeout:
	}
	st.mu.Lock()
	if ended {
		st.state |= stateEnded
	}
}

func passed(dl time.Time) bool { return !dl.IsZero() && !time.Now().Before(dl) }

// Read reads received bytes; after the peer's FIN and the last byte, EOF.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st.mu.Lock()
	for {
		if st.owed > 0 {
			// Window for bytes the receive loop delivered directly: the
			// loop does not write it itself (see control), so this Read,
			// which it woke, does.
			delta := st.owed
			st.owed = 0
			st.mu.Unlock()
			_ = st.send(typeWindowUpdate, 0, delta, nil)
			st.mu.Lock()
			continue
		}
		switch {
		case st.recv.size > 0:
			n := st.recv.read(p)
			delta := st.windowDelta()
			st.mu.Unlock()
			if delta > 0 {
				// A failed update ends the session; the bytes read stand.
				_ = st.send(typeWindowUpdate, 0, delta, nil)
			}
			return n, nil
		case st.state&stateRemoteFIN != 0:
			st.mu.Unlock()
			return 0, io.EOF
		case st.state&stateReset != 0:
			st.mu.Unlock()
			return 0, ErrConnectionReset
		case st.state&stateEnded != 0:
			st.mu.Unlock()
			return 0, st.sess.shutdownErr()
		case passed(st.readDL):
			st.mu.Unlock()
			return 0, ErrTimeout
		case st.unsent.Load() != 0:
			// This end is about to wait for the peer, which must first
			// hear of the stream (or that it was accepted).
			st.mu.Unlock()
			_ = st.flushUnsent()
			st.mu.Lock()
			continue
		}
		st.parked = true
		st.wait(st.readWake, st.readDL)
		st.parked = false
	}
}

// DeliverDirect has the receive loop hand the stream's bytes to fn as
// they arrive, while a Read waits with nothing buffered, instead of
// buffering them and waking that Read: one goroutine hand-off fewer per
// message. fn writes what it can of the bytes without waiting and
// returns how much; what it does not take is buffered for Read as
// usual, in order. The caller must be a loop that reads the stream and
// writes all it read to where fn writes before it reads again, so that
// while a Read waits with nothing buffered, nothing of the stream's is
// still on its way there. A nil fn stops the deliveries.
//
// fn runs on the session's receive loop: it must not block, and must
// not call into the stream or the session.
func (st *Stream) DeliverDirect(fn func([]byte) int) {
	st.mu.Lock()
	st.deliver = fn
	st.mu.Unlock()
}

// Readable reports whether a Read would return without waiting: bytes
// are buffered, or the stream or its session has ended.
func (st *Stream) Readable() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.readable()
}

// readable is Readable under st.mu.
func (st *Stream) readable() bool {
	return st.recv.size > 0 || st.state&(stateRemoteFIN|stateReset|stateEnded) != 0
}

// OnReadable has fn called each time the peer's side makes the stream
// readable (bytes, the peer's FIN or reset) and when the session ends,
// and once at once if the stream is readable already. A reader can then
// run only while there is something to read, rather than park a
// goroutine in Read for the stream's whole life.
//
// fn runs on the session's receive loop, or on the goroutine ending the
// session: it must return quickly, without blocking and without calling
// back into the stream or the session. It may be called again while a
// reader it started is still reading. A nil fn stops the calls.
func (st *Stream) OnReadable(fn func()) {
	st.mu.Lock()
	st.onReadable = fn
	now := fn != nil && st.readable()
	st.mu.Unlock()
	if now {
		fn()
	}
}

// notifyReadable wakes a Read waiting on the stream and calls fn, the
// OnReadable callback read under st.mu, if any. Called without st.mu.
func (st *Stream) notifyReadable(fn func()) {
	wake(st.readWake)
	if fn != nil {
		fn()
	}
}

// windowDelta grows the receive window back towards the largest once at
// least half of it was read, and returns by how much; 0 means no update
// is due. A held acknowledgement grants the window when it leaves.
// Called under st.mu.
func (st *Stream) windowDelta() uint32 {
	most := st.sess.cfg.MaxStreamWindow
	if st.room() < most/2 || st.state&(stateRemoteFIN|stateReset|stateEnded) != 0 || st.unsent.Load() != 0 {
		return 0
	}
	return st.grant()
}

// room is how far the receive window may grow: the largest window less
// what waits unread and what the peer may already send. Called under
// st.mu.
func (st *Stream) room() uint32 {
	return st.sess.cfg.MaxStreamWindow - uint32(st.recv.size) - st.recvWindow
}

// grant grows the receive window by its room and returns by how much.
// Called under st.mu.
func (st *Stream) grant() uint32 {
	delta := st.room()
	st.recvWindow += delta
	return delta
}

// Write sends p as data frames as the peer's window allows.
func (st *Stream) Write(p []byte) (int, error) {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	total := 0
	for total < len(p) {
		n, err := st.writeSome(p[total:])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// writeSome sends one data frame of as much of p as the window takes.
func (st *Stream) writeSome(p []byte) (int, error) {
	st.mu.Lock()
	for {
		var err error
		switch {
		case st.state&stateLocalFIN != 0:
			err = ErrStreamClosed
		case st.state&stateReset != 0:
			err = ErrConnectionReset
		case st.state&stateEnded != 0:
			err = st.sess.shutdownErr()
		case st.sendWindow > 0:
			// As with Read, a deadline bounds only the wait: what can go
			// at once goes, even past it (a late answer is still sent).
			n := uint32(min(len(p), int(st.sendWindow)))
			st.sendWindow -= n
			st.mu.Unlock()
			if err := st.send(typeData, 0, n, p[:n]); err != nil {
				return 0, err
			}
			return int(n), nil
		case passed(st.writeDL):
			err = ErrTimeout
		}
		if err != nil {
			st.mu.Unlock()
			return 0, err
		}
		st.wait(st.writeWake, st.writeDL)
	}
}

// Close sends FIN once the writes under way are out: this end writes no
// more. Reading goes on until the peer's FIN. It is idempotent.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.state&(stateLocalFIN|stateReset|stateEnded) != 0 {
		st.mu.Unlock()
		return nil
	}
	st.state |= stateLocalFIN
	done := st.state&stateRemoteFIN != 0
	st.mu.Unlock()
	wake(st.writeWake) // a writer waiting for window gives up

	st.wlock.Lock()
	err := st.send(typeWindowUpdate, flagFIN, 0, nil)
	st.wlock.Unlock()
	if done {
		st.finish()
	}
	return err
}

// Reset ends the stream both ways at once: the peer's reads and writes
// fail with ErrConnectionReset, and what either end still held for the
// other is dropped. A stream whose one side failed is reset rather than
// half-closed, so the other side stops at once instead of waiting to be
// read or written. It is idempotent, and Close after it does nothing.
func (st *Stream) Reset() error {
	st.mu.Lock()
	if st.state&(stateReset|stateEnded) != 0 {
		st.mu.Unlock()
		return nil
	}
	st.state |= stateReset | stateLocalFIN
	st.mu.Unlock()
	wake(st.readWake)
	wake(st.writeWake)
	err := st.sendReset()
	st.finish()
	return err
}

// sendReset sends RST, unless the peer never heard of the stream: an
// opening still held back is dropped instead.
func (st *Stream) sendReset() error {
	s := st.sess
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if uint16(st.unsent.Load())&flagSYN != 0 {
		st.unsent.Store(0)
		return nil
	}
	return st.sendLocked(typeWindowUpdate, flagRST, 0, nil)
}

// send writes one of the stream's frames, after the SYN or ACK the
// stream holds back, if any: both then leave in one write.
func (st *Stream) send(typ byte, flags uint16, length uint32, body []byte) error {
	s := st.sess
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return st.sendLocked(typ, flags, length, body)
}

// sendLocked is send under the session's write lock.
func (st *Stream) sendLocked(typ byte, flags uint16, length uint32, body []byte) error {
	if st.unsent.Load() != 0 {
		if held, delta := st.takeUnsent(); held != 0 {
			return st.sess.writeAfter(held, delta, typ, flags, st.id, length, body)
		}
	}
	return st.sess.writeLocked(typ, flags, st.id, length, body)
}

// flushUnsent sends the SYN or ACK the stream holds back, if any, in a
// window update of its own.
func (st *Stream) flushUnsent() error {
	s := st.sess
	s.wmu.Lock()
	defer s.wmu.Unlock()
	held, delta := st.takeUnsent()
	if held == 0 {
		return nil
	}
	return s.writeLocked(typeWindowUpdate, held, st.id, delta, nil)
}

// takeUnsent takes the flags the stream holds back, with the window they
// carry (from the initial towards the largest, as an opening or
// acknowledgement sent at once would), and starts the wait for the
// peer's acknowledgement when they open the stream. Called under the
// session's write lock.
func (st *Stream) takeUnsent() (uint16, uint32) {
	held := uint16(st.unsent.Swap(0))
	if held == 0 {
		return 0, 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ackTimer != nil {
		st.ackTimer.Stop()
		st.ackTimer = nil
	}
	if held&flagSYN != 0 && st.state&stateOpening != 0 {
		st.openTimer = time.AfterFunc(st.sess.cfg.StreamOpenTimeout, st.openTimedOut)
	}
	return held, st.grant()
}

// openTimedOut ends the session when the peer has not acknowledged the
// stream within StreamOpenTimeout of its opening.
func (st *Stream) openTimedOut() {
	st.mu.Lock()
	waiting := st.state&stateOpening != 0 && st.state&(stateReset|stateEnded) == 0
	st.mu.Unlock()
	if waiting {
		st.sess.closeWith(ErrOpenTimeout)
	}
}

// CloseWrite is Close, under the name half-closing callers look for.
func (st *Stream) CloseWrite() error { return st.Close() }

// finish drops a stream both ends are done with, or that was reset, from
// its session. What it received and was not read stays readable.
func (st *Stream) finish() {
	st.mu.Lock()
	st.stopTimers()
	if st.state&stateReset != 0 {
		st.recv.release() // a reset stream reads nothing more
	}
	st.mu.Unlock()
	st.sess.forget(st)
}

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	_ = st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

// SetReadDeadline bounds Reads, including one under way.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.readDL = t
	st.mu.Unlock()
	wake(st.readWake)
	return nil
}

// SetWriteDeadline bounds Writes waiting for window, including one under
// way; a write on the connection is bounded by the session's WriteTimeout.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.writeDL = t
	st.mu.Unlock()
	wake(st.writeWake)
	return nil
}

// windowUpdate handles a window update frame from the peer.
func (st *Stream) windowUpdate(flags uint16, delta uint32) {
	st.mu.Lock()
	st.sendWindow += delta
	st.mu.Unlock()
	wake(st.writeWake)
	st.flags(flags)
}

// data reads a data frame's body into the stream, then handles its flags.
// Called on the receive loop.
func (st *Stream) data(flags uint16, length uint32) error {
	if length > 0 {
		st.mu.Lock()
		if length > st.recvWindow {
			window := st.recvWindow
			st.mu.Unlock()
			return fmt.Errorf("%w: stream %d sent %d bytes into a window of %d", ErrProtocol, st.id, length, window)
		}
		st.mu.Unlock()
		// Only this loop shrinks the window, so it still holds the body
		// once read. The window shrinks as the body joins the buffer, in
		// one step: a reader in between would grant the body's room twice.
		bp := getChunk(int(length))
		if _, err := io.ReadFull(st.sess.conn, (*bp)[:length]); err != nil {
			putChunk(bp)
			return fmt.Errorf("%w: read: %w", ErrSessionShutdown, err)
		}
		st.mu.Lock()
		st.recvWindow -= length
		switch {
		case st.state&(stateReset|stateRemoteFIN) != 0:
			putChunk(bp) // nobody will read it
			st.mu.Unlock()
		case st.deliver != nil && st.parked && st.recv.size == 0:
			st.direct(bp, int(length))
		default:
			st.buffer(bp, int(length), 0)
		}
	}
	st.flags(flags)
	return nil
}

// buffer keeps the first n bytes of bp, of which off were taken already,
// for Read, and tells the reader. Called under st.mu, which it releases.
func (st *Stream) buffer(bp *[]byte, n, off int) {
	st.recv.push(bp, n, off)
	fn := st.onReadable
	st.mu.Unlock()
	st.notifyReadable(fn)
}

// direct hands a frame's body, the first n bytes of bp, to the stream's
// deliver function, and buffers what it does not take. Called on the
// receive loop under st.mu, which it releases.
func (st *Stream) direct(bp *[]byte, n int) {
	deliver := st.deliver
	st.mu.Unlock()
	took := max(0, min(n, deliver((*bp)[:n])))
	st.mu.Lock()
	switch {
	case st.state&stateReset != 0:
		putChunk(bp)
	case took < n:
		st.buffer(bp, n, took)
		return
	default:
		putChunk(bp)
		if delta := st.windowDelta(); delta > 0 {
			st.owed += delta
			st.mu.Unlock()
			wake(st.readWake)
			return
		}
	}
	st.mu.Unlock()
}

// flags applies ACK, FIN and RST from a frame of the peer's.
func (st *Stream) flags(flags uint16) {
	if flags&(flagACK|flagFIN|flagRST) == 0 {
		return
	}
	st.mu.Lock()
	if flags&flagACK != 0 && st.state&stateOpening != 0 {
		st.state &^= stateOpening
		if st.openTimer != nil {
			st.openTimer.Stop()
		}
	}
	done := false
	if flags&flagFIN != 0 && st.state&stateRemoteFIN == 0 {
		st.state |= stateRemoteFIN
		done = st.state&stateLocalFIN != 0
	}
	if flags&flagRST != 0 {
		st.state |= stateReset
		done = true
	}
	var fn func()
	if flags&(flagFIN|flagRST) != 0 {
		fn = st.onReadable
	}
	st.mu.Unlock()
	wake(st.writeWake)
	st.notifyReadable(fn)
	if done {
		st.finish()
	}
}

// stopTimers stops the wait for the peer's acknowledgement and the hold
// on this end's. Called under st.mu.
func (st *Stream) stopTimers() {
	if st.openTimer != nil {
		st.openTimer.Stop()
	}
	if st.ackTimer != nil {
		st.ackTimer.Stop()
		st.ackTimer = nil
	}
}

// sessionEnded wakes everyone waiting on the stream: the session is gone.
// What was received stays readable: a peer may answer and hang up at once.
func (st *Stream) sessionEnded() {
	st.mu.Lock()
	st.state |= stateEnded
	st.stopTimers()
	fn := st.onReadable
	st.mu.Unlock()
	wake(st.writeWake)
	st.notifyReadable(fn)
}

// chunks is a stream's received bytes, in pooled buffers.
type chunks struct {
	bufs []chunk
	size int
}

// chunk is one frame's body: the first n bytes of a pooled buffer, of
// which off were read.
type chunk struct {
	bp     *[]byte
	off, n int
}

// push buffers the first n bytes of bp, of which off were read already.
func (c *chunks) push(bp *[]byte, n, off int) {
	c.bufs = append(c.bufs, chunk{bp: bp, off: off, n: n})
	c.size += n - off
}

func (c *chunks) read(p []byte) int {
	n := 0
	for n < len(p) && len(c.bufs) > 0 {
		head := &c.bufs[0]
		m := copy(p[n:], (*head.bp)[head.off:head.n])
		n += m
		head.off += m
		if head.off == head.n {
			putChunk(head.bp)
			*head = chunk{}
			c.bufs = c.bufs[1:]
		}
	}
	c.size -= n
	if len(c.bufs) == 0 {
		c.bufs = nil // an idle stream holds no slice either
	}
	return n
}

func (c *chunks) release() {
	for _, b := range c.bufs {
		putChunk(b.bp)
	}
	c.bufs, c.size = nil, 0
}

// Chunk pools by size class, 1 KiB to 2 MiB: a frame's body waits in the
// smallest class that holds it. Bodies are bounded by the stream window.
const (
	minChunkShift = 10
	chunkClasses  = 12
)

var chunkPools [chunkClasses]sync.Pool

func chunkClass(n int) int {
	if n <= 1<<minChunkShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minChunkShift
}

// getChunk returns a buffer of at least n bytes.
func getChunk(n int) *[]byte {
	c := chunkClass(n)
	if c >= chunkClasses {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := chunkPools[c].Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 1<<(c+minChunkShift))
	return &b
}

// putChunk takes back a buffer from getChunk.
func putChunk(bp *[]byte) {
	c := chunkClass(len(*bp))
	if c >= chunkClasses || len(*bp) != 1<<(c+minChunkShift) {
		return
	}
	chunkPools[c].Put(bp)
}
