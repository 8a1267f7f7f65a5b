package tunnel

import (
	"net"
	"sync"
)

// batch wraps the transport connection under a WebSocket client. A
// WebSocket client masks every frame through a small fixed buffer and
// flushes it to the socket each time it fills, so one large message
// becomes many small writes. Between hold and release, it gathers
// those writes and sends them to the socket in one Write when the message
// is done. Outside a hold, writes pass straight through.
//
// The coalescer above the WebSocket holds and releases around each
// message, so the bytes on the wire and their order never change, only the
// number of system calls.
type batch struct {
	net.Conn

	mu      sync.Mutex
	holding bool
	buf     []byte
}

// Write gathers p while a hold is on, else writes it through.
func (b *batch) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.holding {
		b.buf = append(b.buf, p...)
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
	b.holding = false
	buf := b.buf
	b.buf = b.buf[:0]
	if cap(b.buf) > 4*MaxMessage {
		b.buf = nil // do not pin a buffer grown by a burst of control frames
	}
	// Write under the lock: a pass-through write from another goroutine
	// (a pong) must not overtake the gathered bytes.
	defer b.mu.Unlock()
	if len(buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(buf)
	return err
}
