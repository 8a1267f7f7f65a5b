package tunnel

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/protocol/tunnel/mux"
)

// ErrKeepAliveTimeout ends a session whose peer left a keepalive ping
// unanswered for the write timeout: the peer or the path to it is gone.
// Work on the session that fails because of it reports it.
var ErrKeepAliveTimeout = mux.ErrKeepAliveTimeout

// keepAlive pings the peer once it has been silent for an interval, and
// ends the session when an answer does not come within the write timeout
// (the multiplexer bounds the wait by it). Any frame from the peer shows
// it is there as well as an answer does, so a peer that pings, sends
// Health or carries data is not pinged: with both ends keeping alive, one
// ping an interval crosses the tunnel instead of one each way, which at a
// relay holding thousands of idle tunnels is a good part of its work.
// It runs from timers and the ping's callback: no goroutine waits for it,
// which there would be one stack per tunnel for nothing.
type keepAlive struct {
	mux    *mux.Session
	conn   net.Conn // the session's byte stream, whose socket a failure drops
	every  time.Duration
	failed atomic.Bool // the session ended for a ping not answered

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func startKeepAlive(m *mux.Session, conn net.Conn, every time.Duration) *keepAlive {
	k := &keepAlive{mux: m, conn: conn, every: every}
	k.mu.Lock()
	k.t = time.AfterFunc(every, k.ping)
	k.mu.Unlock()
	return k
}

// ping runs on the timer's goroutine and sends a ping, unless the peer
// was heard within the interval: then it looks again an interval after
// that. answered runs when the ping's answer comes or its wait ends.
func (k *keepAlive) ping() {
	if quiet := k.mux.SinceHeard(); quiet < k.every {
		k.again(k.every - quiet)
		return
	}
	k.mux.PingThen(k.answered)
}

// again sets the timer to fire after d, unless the keepalive stopped.
func (k *keepAlive) again(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped {
		k.t.Reset(d)
	}
}

func (k *keepAlive) answered(_ time.Duration, err error) {
	if err != nil {
		if !errors.Is(err, mux.ErrSessionShutdown) {
			// The multiplexer ends the session once this returns; the
			// socket goes first, so that end does not wait on it.
			k.failed.Store(true)
			dropSocket(k.conn)
		}
		return
	}
	k.again(k.every)
}

// dropSocket closes the connection at the bottom of conn's chain (see
// chain): the socket, or what wraps it below the WebSocket. A session
// whose peer left a ping unanswered ends without the WebSocket's close
// handshake, whose answer would not come either: the client's end would
// wait for it (wsCloseWait) before the session could end.
func dropSocket(conn net.Conn) {
	var bottom net.Conn
	for c := range chain(conn) {
		bottom = c
	}
	if bottom != nil {
		_ = bottom.Close()
	}
}

// stop ends the pings; a ping under way finishes and sends no other.
func (k *keepAlive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}

// cause is err, or ErrKeepAliveTimeout when the session ended for an
// unanswered ping: the stream and control errors that follow (an EOF, a
// reset) would hide why.
func (k *keepAlive) cause(err error) error {
	if err != nil && k != nil && k.failed.Load() {
		return ErrKeepAliveTimeout
	}
	return err
}
