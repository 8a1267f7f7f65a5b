package broker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// control serves one session's control stream: it records the agent's
// Health reports, paces them, and ends the session when the stream ends,
// breaks a limit, or stays silent for EndedAfter heartbeats.
//
// It holds no goroutine while the agent is quiet, which is nearly always:
// a Health every heartbeat period is all a live tunnel sends on it. The
// multiplexer calls readable when something arrives (OnControl), and that
// starts a reader that runs while frames are there to read, then returns.
// An idle tunnel at the relay thus costs the multiplexer's receive loop
// alone, not a second goroutine and its stack.
type control struct {
	b      *Broker
	sess   *Session
	finish func() // once the session is over and accounted for

	// busy is set while a reader runs, and for good once the session is
	// over: it lets one reader at a time in, and none after the end.
	busy atomic.Bool

	quiet    time.Duration // silence that ends the session
	silence  *time.Timer   // fires after quiet with no frame
	silenced atomic.Bool   // silence fired

	// Only the reader touches these; busy orders one reader after
	// another.
	pace     *pacer
	lastSeen time.Time
}

// serveControl starts serving sess's control stream; finish is called
// once the session has ended.
func serveControl(b *Broker, sess *Session, finish func()) {
	c := &control{
		b: b, sess: sess, finish: finish,
		quiet:    EndedAfter * b.cfg.HeartbeatInterval,
		pace:     newPacer(b.cfg.HeartbeatInterval, sess.ConnectedAt),
		lastSeen: sess.ConnectedAt,
	}
	c.silence = time.AfterFunc(c.quiet, c.silent)
	if err := sess.mux.OnControl(c.readable); err != nil {
		// No control stream: the handshake did not run, which begin
		// rules out; end the session rather than leave it unserved.
		c.busy.Store(true)
		c.end(err)
	}
}

// readable starts a reader unless one runs or the session is over. It is
// called on the multiplexer's receive loop and must not block.
func (c *control) readable() {
	if c.busy.CompareAndSwap(false, true) {
		c.b.wg.Add(1)
		go c.read()
	}
}

// silent ends a session whose agent sent no control frame for c.quiet.
// The reader then finds the session closed and says why.
func (c *control) silent() {
	c.silenced.Store(true)
	_ = c.sess.Close()
}

// read handles the frames that have arrived, then returns; it ends the
// session when a frame or the stream's end says so.
func (c *control) read() {
	defer c.b.wg.Done()
	for {
		for c.sess.mux.ControlReadable() {
			if err := c.next(); err != nil {
				c.end(err)
				return // busy stays set: no reader after the end
			}
		}
		c.busy.Store(false)
		// A frame that arrived after the last look found busy set and
		// started no reader: look again now that it is clear.
		if !c.sess.mux.ControlReadable() || !c.busy.CompareAndSwap(false, true) {
			return
		}
	}
}

// next reads and handles one control frame. A frame beyond the session's
// pace, or a Health out of bounds, ends the session with a GoAway that
// says why; unknown frame types are skipped.
func (c *control) next() error {
	b, sess := c.b, c.sess
	// The frame has begun to arrive: the rest gets as long as silence
	// would.
	f, err := sess.mux.RecvBounded(c.quiet, reportLimit)
	if err != nil && !errors.Is(err, tunnel.ErrOverLimit) {
		if c.silenced.Load() {
			return fmt.Errorf("no control frame from the agent in %s (%d heartbeat periods)", c.quiet, EndedAfter)
		}
		return err
	}
	at := time.Now()
	c.silence.Reset(c.quiet)
	if !c.pace.take(at) {
		b.refuseAgent(sess.mux, sess.Identity, sess.Hello.AgentID, errHealthFlood)
		lingerAfterGoAway(sess.mux)
		return errHealthFlood
	}
	if f.Type != protocol.FrameHealth {
		return nil // unknown control frames are ignored, their bodies skipped
	}
	h, err := readHealth(f, err)
	if err != nil {
		b.refuseAgent(sess.mux, sess.Identity, sess.Hello.AgentID, err)
		lingerAfterGoAway(sess.mux)
		return err
	}
	prev := sess.Allowlist()
	shareRules(prev, &h.Allowlist)
	sess.recordHealth(h, at)
	b.obs.SessionHealth(sess, prev)
	if at.Sub(c.lastSeen) >= seenEvery {
		b.obs.SessionSeen(b.ctx, sess, at)
		c.lastSeen = at
	}
	return nil
}

// end closes the session, records when its agent was last there, and
// forgets it; err is why it ended.
func (c *control) end(err error) {
	c.silence.Stop()
	_ = c.sess.Close()
	c.b.obs.SessionSeen(context.Background(), c.sess, time.Now())
	c.b.logSession(c.sess, "agent tunnel down", "err", err)
	c.b.down(c.sess)
	c.finish()
}
