package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/postern/postern/protocol"
)

// Answered is told of each refusal the front writes itself: its reason,
// and whether the request carried Proxy-Authorization at all (one without
// is a client asking how to authenticate, not a refused credential).
type Answered func(reason protocol.Reason, presented bool)

// Front wraps the proxy listener so that the proxy reads the first
// request of each client connection itself, and serves it when it is a
// CONNECT: nearly every request a product sends is one, each on a
// connection of its own. The listener it returns yields every other
// connection, with the bytes already read still to come, for net/http
// to serve as before; so does a CONNECT the front does not read exactly
// (see parseHead).
//
// net/http costs a CONNECT more than the proxy's own work does: a
// connection with its reader, a parsed header map, contexts, and on the
// hijack a buffered reader and writer that go to the garbage collector,
// 12 KiB a request, whose heap headroom is most of what an idle stream
// costs the relay beyond its goroutines. The front reads the head into a
// pooled buffer and keeps two strings of it.
//
// A connection is read for HeaderTimeout; a TLS listener's handshake
// happens within it. Until the agent answers, a client that hangs up
// ends the wait, as under net/http. The connections it serves are owned
// by the proxy: Close ends those still waiting for their head or for the
// agent, and waits for them. answered, if not nil, is told of each
// refusal.
func (p *Proxy) Front(ln net.Listener, answered Answered) net.Listener {
	if answered == nil {
		answered = func(protocol.Reason, bool) {}
	}
	f := &front{
		Listener: ln, p: p, answered: answered,
		handed: make(chan net.Conn), closing: make(chan struct{}), done: make(chan struct{}),
	}
	go f.run()
	return f
}

// front is the listener Front returns.
type front struct {
	net.Listener // the listener underneath; Addr is its
	p            *Proxy
	answered     Answered
	handed       chan net.Conn // connections for net/http
	closing      chan struct{} // closed by Close
	closeOnce    sync.Once
	done         chan struct{} // closed when run has returned
	err          error         // why run returned; read after done
}

// Accept returns the next connection that is net/http's to serve.
func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.handed:
		return c, nil
	case <-f.done:
		return nil, f.err
	}
}

// Close closes the listener underneath and waits for the accept loop to
// end. Connections already accepted go on; the proxy's Close ends them.
func (f *front) Close() error {
	err := net.ErrClosed
	f.closeOnce.Do(func() {
		close(f.closing)
		err = f.Listener.Close()
		<-f.done
	})
	return err
}

// run accepts connections until the listener closes or fails for good.
// Running out of file descriptors or buffers is not for good: it waits a
// moment, longer each time, as net/http does.
func (f *front) run() {
	defer close(f.done)
	var pause time.Duration
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			if f.isClosing() {
				f.err = net.ErrClosed
				return
			}
			if !retryable(err) {
				f.err = err
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			f.p.log.Warn("proxy listener: accept failed; retrying", "err", err, "pause", pause)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-f.closing:
				t.Stop()
			}
			continue
		}
		pause = 0
		if !f.p.start(&f.p.conns) {
			_ = c.Close() // the proxy is closed
			continue
		}
		go f.serve(c)
	}
}

func (f *front) isClosing() bool {
	select {
	case <-f.closing:
		return true
	default:
		return false
	}
}

// retryable reports whether an accept error passes with time.
func retryable(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// headBuf is how much of a connection the front reads looking for a
// CONNECT's head. A product's CONNECT is a few hundred bytes; a longer
// head goes to net/http, which takes up to the relay's header limit.
const headBuf = 4 << 10

var heads = sync.Pool{New: func() any { return new([headBuf]byte) }}

// serve reads the first request of c and serves it, or hands c over.
func (f *front) serve(c net.Conn) {
	defer f.p.conns.Done()
	// A connection still being read when the proxy closes is closed.
	stop := context.AfterFunc(f.p.life, func() { _ = c.Close() })
	buf := heads.Get().(*[headBuf]byte)
	h, n, verdict, err := f.read(c, buf[:])
	// What follows a CONNECT's head (rare: most clients wait for the
	// answer), or all that was read of a connection net/http will serve.
	var rest []byte
	if err == nil && n > h.size {
		rest = bytes.Clone(buf[h.size:n])
	}
	heads.Put(buf)
	if !stop() {
		return // closed by the proxy's Close
	}
	switch {
	case err != nil:
		_ = c.Close()
	case verdict == headOther:
		f.handOff(c, rest)
	default:
		f.p.serveConnect(c, h, rest, f.answered)
	}
}

// read reads until it can tell whether c starts with a CONNECT the front
// serves; h.size is 0 when it does not.
func (f *front) read(c net.Conn, buf []byte) (h connectHead, n int, verdict headVerdict, err error) {
	_ = c.SetReadDeadline(time.Now().Add(f.p.cfg.HeaderTimeout))
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			if f.p.log.Enabled(context.Background(), slog.LevelDebug) {
				f.p.log.Debug("proxy TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			}
			return connectHead{}, 0, headOther, err
		}
	}
	for {
		m, err := c.Read(buf[n:])
		n += m
		if h, verdict = parseHead(buf[:n]); verdict != headMore {
			return h, n, verdict, nil
		}
		if n == len(buf) {
			return connectHead{}, n, headOther, nil
		}
		if err != nil {
			return connectHead{}, n, headOther, err
		}
	}
}

// handOff passes c to net/http with the bytes the front read of it.
func (f *front) handOff(c net.Conn, read []byte) {
	rc := &replayConn{Conn: c, held: read}
	select {
	case f.handed <- rc:
	case <-f.closing:
		_ = c.Close()
	case <-f.p.life.Done():
		_ = c.Close()
	}
}

// replayConn returns the bytes the front read before the connection's
// own.
type replayConn struct {
	net.Conn
	held []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.held) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.held)
	c.held = c.held[n:]
	if len(c.held) == 0 {
		c.held = nil
	}
	return n, nil
}

// CloseWrite half-closes the connection underneath.
func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

// NetConn returns the connection underneath, as *tls.Conn's does.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// hangUp watches a client while its CONNECT waits for the agent, as
// net/http watches one while a handler runs: a client that hangs up ends
// the wait. A byte the client sends meanwhile is kept for the stream.
type hangUp struct {
	c    net.Conn
	done chan struct{}
	lead [1]byte
	n    int
	err  error
}

// watchHangUp starts the watch; gone is called if the client hangs up.
func watchHangUp(c net.Conn, gone func()) *hangUp {
	w := &hangUp{c: c, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.n, w.err = c.Read(w.lead[:])
		if w.n == 0 && w.err != nil && !errors.Is(w.err, os.ErrDeadlineExceeded) {
			gone()
		}
	}()
	return w
}

// aLongTimeAgo is a read deadline that has passed: it ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// stop ends the watch and returns the byte the client sent meanwhile, if
// any, or the error that ended its connection.
func (w *hangUp) stop() ([]byte, error) {
	_ = w.c.SetReadDeadline(aLongTimeAgo)
	<-w.done
	_ = w.c.SetReadDeadline(time.Time{})
	switch {
	case w.n == 1:
		return w.lead[:], nil
	case w.err == nil || errors.Is(w.err, os.ErrDeadlineExceeded):
		return nil, nil
	}
	return nil, w.err
}
