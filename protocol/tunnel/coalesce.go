package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
)

const (
	headerSize = 12
	typeData   = 0
)

// MaxMessage is the largest WebSocket message either end sends, and the
// read limit of both: a full-window yamux data frame with its header.
// Larger frames are split across messages, which is safe because yamux
// sees one byte stream.
const MaxMessage = 1<<20 + 64

// coalescer wraps the WebSocket's net.Conn so that each yamux data frame
// leaves in one Write, and so in one message.
//
// yamux writes every data frame as two Write calls: a 12-byte header, then
// the body. A WebSocket net.Conn turns each Write into its own message, so
// without help every frame costs two messages, two syscalls and two wakeups
// on the far side. The coalescer holds a data header back and sends it with
// its body. Headers without a body (window updates, pings, go-aways) pass
// straight through, so nothing is ever held waiting for a write that does
// not come. It knows only the yamux header layout (spec.md, section 4.1).
type coalescer struct {
	net.Conn
	msg messageWriter // Conn's, when it takes a header and body as one message

	mu      sync.Mutex
	pending []byte // a held data header, or empty
	buf     []byte // reused join buffer, when msg is nil
	batch   *batch // the socket under the WebSocket, or nil
}

// messageWriter is a WebSocket end that sends a header and a body as one
// message without their being copied together first (wsConn).
type messageWriter interface {
	writeMessage(hdr, body []byte) (int, error)
}

// newCoalescer returns c wrapped; with a non-nil b it holds b around each
// message, so a message written in several writes (a TLS connection's
// records) leaves in one system call. Reads are untouched.
func newCoalescer(c net.Conn, b *batch) *coalescer {
	co := &coalescer{Conn: c, pending: make([]byte, 0, headerSize), batch: b}
	co.msg, _ = c.(messageWriter)
	return co
}

// NetConn returns the WebSocket end the coalescer writes to, as
// *tls.Conn's does its socket.
func (c *coalescer) NetConn() net.Conn { return c.Conn }

// Write sends p, joining a held data header with the body that follows it.
func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batch != nil {
		return c.writeBatched(p)
	}
	if len(c.pending) == 0 {
		if isDataHeader(p) {
			c.pending = append(c.pending, p...)
			return len(p), nil
		}
		return c.writeChunks(p)
	}
	return c.sendHeld(p)
}

// sendHeld sends the held header with p: as much of p as fits one
// message joined to the header, the rest in messages of its own. It
// returns how much of p went.
func (c *coalescer) sendHeld(p []byte) (int, error) {
	n, err := c.joined(p)
	if err != nil {
		return n, err
	}
	m, err := c.writeChunks(p[min(len(p), MaxMessage-headerSize):])
	return n + m, err
}

// joined sends the held header with as much of p as fits one message and
// returns how much of p went.
func (c *coalescer) joined(p []byte) (int, error) {
	first := p[:min(len(p), MaxMessage-headerSize)]
	var (
		n   int
		err error
	)
	if c.msg != nil {
		n, err = c.msg.writeMessage(c.pending, first)
	} else {
		c.buf = append(append(c.buf[:0], c.pending...), first...)
		n, err = c.Conn.Write(c.buf)
	}
	c.pending = c.pending[:0]
	// Report progress on p alone: the header was already acknowledged.
	return max(n-headerSize, 0), err
}

// joinLimit is the largest body the batched path copies behind its
// header into one message. A small frame (a request, a response, a
// window's worth of a slow stream) then costs one WebSocket frame and, under
// TLS, one record rather than two; a larger body is not copied, as its
// own message costs no more than the copy would.
const joinLimit = 16 << 10

// writeBatched holds a data header back like the unbatched path, then
// sends it with its body inside one hold of the socket batch: one system
// call, and one message when the body is small enough to join.
func (c *coalescer) writeBatched(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if isDataHeader(p) {
			c.pending = append(c.pending, p...)
			return len(p), nil
		}
		// A frame without a body, or a body without its header: one
		// message, held so its writes (under TLS, its records) leave together.
		c.batch.hold()
		n, err := c.writeChunks(p)
		if rerr := c.batch.release(); err == nil && rerr != nil {
			return 0, rerr
		}
		return n, err
	}
	c.batch.hold()
	var (
		n   int
		err error
	)
	switch {
	case c.msg != nil || len(p) <= joinLimit:
		n, err = c.sendHeld(p)
	default:
		if _, err = c.Conn.Write(c.pending); err == nil {
			n, err = c.writeChunks(p)
		}
		c.pending = c.pending[:0]
	}
	if rerr := c.batch.release(); err == nil && rerr != nil {
		return 0, rerr
	}
	return n, err
}

func isDataHeader(p []byte) bool {
	return len(p) == headerSize && p[1] == typeData && binary.BigEndian.Uint32(p[8:12]) > 0
}

func (c *coalescer) writeChunks(p []byte) (int, error) {
	var total int
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxMessage)]
		n, err := c.Conn.Write(chunk)
		total += n
		if err != nil {
			return total, err
		}
		p = p[len(chunk):]
	}
	return total, nil
}
