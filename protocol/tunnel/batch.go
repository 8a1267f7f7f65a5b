package tunnel

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

// batch wraps a socket that may carry a WebSocket over TLS. A TLS
// connection writes a large message as one record of at most 16 KiB
// after another, each in a system call of its own. Between hold and
// release, the batch gathers those writes and sends them to the socket in
// one Write when the message is done. Outside a hold, writes pass
// straight through.
//
// The coalescer above the WebSocket holds and releases around each
// message, so the bytes on the wire and their order never change, only the
// number of system calls.
type batch struct {
	net.Conn

	mu      sync.Mutex
	holding bool
	buf     *[]byte // from batchBufs, only while a hold gathers bytes
}

// batchBufs keeps the gathering buffers of every tunnel between holds, so
// an idle tunnel holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Write gathers p while a hold is on, else writes it through.
func (b *batch) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.holding {
		if b.buf == nil {
			b.buf = batchBufs.Get().(*[]byte)
		}
		*b.buf = append(*b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

func (b *batch) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// release ends the hold and writes what was gathered in one call.
func (b *batch) release() error {
	b.mu.Lock()
	// Write under the lock: a pass-through write from another goroutine
	// (a pong) must not overtake the gathered bytes.
	defer b.mu.Unlock()
	b.holding = false
	buf := b.buf
	if buf == nil {
		return nil
	}
	b.buf = nil
	_, err := b.Conn.Write(*buf)
	if cap(*buf) <= 4*MaxMessage { // do not keep a buffer grown by a burst of control frames
		*buf = (*buf)[:0]
		batchBufs.Put(buf)
	}
	return err
}

// BatchListener wraps ln so that a tunnel accepted on one of its
// connections can batch its writes as the client does: Upgrade finds the
// batch under the connection it hijacks, also under TLS, where each
// WebSocket message otherwise leaves as several records in as many system
// calls. Put it directly under TLS (tls.NewListener(BatchListener(ln),
// ...)). Connections that never become tunnels write straight through.
func BatchListener(ln net.Listener) net.Listener { return batchListener{ln} }

type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batch{Conn: c}, nil
}

// batchUnder returns the batch of a hijacked connection, or nil when it
// was not accepted on a BatchListener.
func batchUnder(c net.Conn) *batch {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	b, _ := c.(*batch)
	return b
}

// CloseWrite closes the write half of the connection underneath, so a
// server keeps its graceful close on a batched connection.
func (b *batch) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("tunnel: the connection has no write half to close")
}

// NetConn returns the connection underneath, as *tls.Conn's does.
func (b *batch) NetConn() net.Conn { return b.Conn }
