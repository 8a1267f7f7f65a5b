package coalesce

import (
	"net"
	"sync"
)

// Batch wraps the transport connection under a WebSocket client. A
// WebSocket client masks every frame through a small fixed buffer and
// flushes it to the socket each time it fills, so one large message
// becomes many small writes. Between hold and release, Batch gathers
// those writes and sends them to the socket in one Write when the message
// is done. Outside a hold, writes pass straight through.
//
// Conn holds and releases around each message when it was built with
// NewWithBatch, so the bytes on the wire and their order never change,
// only the number of system calls.
type Batch struct {
	net.Conn

	mu      sync.Mutex
	holding bool
	buf     []byte
}

// NewBatch wraps c.
func NewBatch(c net.Conn) *Batch { return &Batch{Conn: c} }

// Write gathers p while a hold is on, else writes it through.
func (b *Batch) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.holding {
		b.buf = append(b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

func (b *Batch) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// release ends the hold and writes what was gathered in one call.
func (b *Batch) release() error {
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
