package tunnel

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Both ends of a tunnel's WebSocket (RFC 6455, binary messages only, no
// extensions) are the tunnel package's own. The WebSocket library costs
// two timeout contexts per frame; its server keeps the HTTP connection's
// 4 KiB reader and writer for the tunnel's whole life, and its client
// masks every message through a 4 KiB buffer, so a large message leaves
// as many small writes (and, under TLS, as 4 KiB records). wsConn reads
// frames in place in the caller's buffer, so an idle tunnel holds no
// buffer of its own, and writes each message, a yamux header and its
// body together, with one Write where it can. The bytes on the wire are
// what any RFC 6455 peer sends and reads; the tests use the library as
// the reference peer of each end.

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// WebSocket close codes (RFC 6455 section 7.4.1).
const (
	closeNormal       = 1000
	closeProtocol     = 1002
	closeUnsupported  = 1003
	closeTooBig       = 1009
	closeNoStatusSent = 1005
)

// maxControlPayload is the largest payload of a control frame.
const maxControlPayload = 125

// maxFrameHeader is the longest frame header: two bytes, an eight-byte
// length and a client's four-byte mask.
const maxFrameHeader = 2 + 8 + 4

// wsCloseWait bounds writing the close frame when the tunnel ends.
const wsCloseWait = time.Second

// wsWriteBufs keep the buffers a message is written from when the
// connection cannot take its parts in one system call: the server joins
// a message's start (up to joinLimit, one TLS record) behind its header;
// the client masks every message into one. Pooled, so an idle tunnel
// holds none; the large ones only while a bulk transfer writes.
var (
	wsWriteBufs      = sync.Pool{New: func() any { b := make([]byte, 0, joinLimit+maxFrameHeader+headerSize); return &b }}
	wsLargeWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, BufferSize+maxFrameHeader+headerSize); return &b }}
)

// ProtocolViolation is a WebSocket frame this end refused; the tunnel was
// closed with Code.
type ProtocolViolation struct {
	Code   int
	Reason string
}

func (e *ProtocolViolation) Error() string {
	return fmt.Sprintf("websocket: %s (closed with status %d)", e.Reason, e.Code)
}

// PeerClosedError is a close frame from the peer with a status other than
// normal closure or going away.
type PeerClosedError struct {
	Code   int
	Reason string
}

func (e *PeerClosedError) Error() string {
	return fmt.Sprintf("websocket closed by the peer: status %d %q", e.Code, e.Reason)
}

// wsConn is a net.Conn whose byte stream is the payloads of the binary
// messages of one end of a WebSocket: the server end (reads masked
// frames, writes plain ones) or the client end (the reverse).
type wsConn struct {
	net.Conn
	client bool // the client end
	writev bool // Conn writes net.Buffers in one system call

	rmu     sync.Mutex
	held    []byte    // wire bytes read but not yet parsed
	heldBuf [256]byte // held's storage, unless early bytes were more
	remain  int64     // payload bytes left in the current data frame
	masked  bool      // the current data frame is masked, with key
	key     [4]byte
	keyPos  int
	msgLen  int64 // payload bytes of the open message so far
	inMsg   bool  // a message is open: continuations may follow
	rerr    error // sticky: once reading failed, it keeps failing

	// readEnded closes when reading ends (the client's): its Close waits
	// for that, the server's answer to its close frame.
	readEnded chan struct{}
	readOnce  sync.Once

	wmu     sync.Mutex
	hdr     [maxFrameHeader]byte // the header being written
	vecArr  [3][]byte            // the parts of a vectored write, in vec
	vec     net.Buffers
	masks   *rand.ChaCha8 // the client's masking keys
	closing bool          // a close frame went out: nothing more may
	once    sync.Once
	sent    bool // sendClose wrote its close frame (set inside once)
}

// newServerConn returns the server end of a WebSocket on c, whose client
// already sent early bytes behind its opening request.
func newServerConn(c net.Conn, early []byte) *wsConn {
	s := &wsConn{Conn: c}
	_, s.writev = c.(*net.TCPConn)
	if len(early) > len(s.heldBuf) {
		s.held = early
	} else {
		s.held = append(s.heldBuf[:0], early...)
	}
	return s
}

// newClientConn returns the client end of a WebSocket on c. Its masking
// keys come from a generator seeded by the system's secure source, as
// RFC 6455 asks: a page script must not be able to predict them.
func newClientConn(c net.Conn) *wsConn {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics rather)
	return &wsConn{Conn: c, client: true, masks: rand.NewChaCha8(seed), readEnded: make(chan struct{})}
}

// NetConn returns the connection underneath.
func (s *wsConn) NetConn() net.Conn { return s.Conn }

// Read reads payload bytes of binary messages into p, answering pings
// and a close on the way. Frames that arrive in one read into a large p
// are parsed in p itself; otherwise bytes wait in the held buffer, so
// the only buffer an idle tunnel has is the caller's.
func (s *wsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for s.rerr == nil {
		switch {
		case s.remain > 0 && len(s.held) > 0:
			// Payload already read: hand over what p takes.
			m := min(int64(len(p)), s.remain, int64(len(s.held)))
			s.unmask(s.held[:m])
			n := copy(p, s.held[:m])
			s.held = s.held[n:]
			s.remain -= int64(n)
			return n, nil
		case s.remain > 0 && len(p) < len(s.heldBuf):
			// A small read inside a frame (the multiplexer's next header,
			// cut by the last read): read ahead through the held buffer,
			// so that what follows comes in the same system call.
			n, err := s.Conn.Read(s.heldBuf[:])
			s.held = s.heldBuf[:n]
			if n == 0 {
				return 0, s.fail(cutShort(err))
			}
		case s.remain > 0:
			n, err := s.Conn.Read(p[:min(int64(len(p)), s.remain)])
			s.unmask(p[:n])
			s.remain -= int64(n)
			if n > 0 {
				return n, nil // an error comes back on the next read
			}
			return 0, s.fail(cutShort(err))
		case len(s.held) > 0:
			// A frame starts in the held bytes.
			used, err := s.frame(s.held)
			if err != nil {
				return 0, s.fail(err)
			}
			if used > 0 {
				s.held = s.held[used:]
				continue
			}
			// Its header is cut off; it fits the held buffer whole.
			k := copy(s.heldBuf[:], s.held)
			n, err := s.Conn.Read(s.heldBuf[k:])
			s.held = s.heldBuf[:k+n]
			if n == 0 {
				return 0, s.fail(cutShort(err))
			}
		case len(p) > len(s.heldBuf):
			// A frame boundary and nothing held: read into p and parse
			// in place.
			n, err := s.Conn.Read(p)
			if n == 0 {
				return 0, s.fail(err)
			}
			out, perr := s.parse(p[:n], p)
			if out > 0 || perr != nil {
				return out, s.fail(perr)
			}
		default:
			// A small p: read through the held buffer.
			n, err := s.Conn.Read(s.heldBuf[:])
			s.held = s.heldBuf[:n]
			if n == 0 {
				return 0, s.fail(err)
			}
		}
	}
	return 0, s.rerr
}

// cutShort turns the end of the stream inside a frame into
// io.ErrUnexpectedEOF.
func cutShort(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parse walks the wire bytes in, which sit in p at or after where the
// payload they carry goes, writing that payload to the start of p. A
// frame cut off at the end of in is kept in held, which is empty on
// entry. It returns the payload byte count.
func (s *wsConn) parse(in, p []byte) (int, error) {
	out := 0
	for len(in) > 0 {
		if s.remain > 0 {
			m := min(int64(len(in)), s.remain)
			s.unmask(in[:m])
			out += copy(p[out:], in[:m])
			in = in[m:]
			s.remain -= m
			continue
		}
		used, err := s.frame(in)
		if err != nil {
			return out, err
		}
		if used == 0 { // the frame is cut off: keep it for the next read
			s.held = append(s.heldBuf[:0], in...)
			return out, nil
		}
		in = in[used:]
	}
	return out, nil
}

// frame parses one frame header at the start of in, or a whole control
// frame, and returns how many bytes it took: 0 when in holds too little.
func (s *wsConn) frame(in []byte) (int, error) {
	if len(in) < 2 {
		return 0, nil
	}
	b0, b1 := in[0], in[1]
	fin, op, masked := b0&0x80 != 0, b0&0x0F, b1&0x80 != 0
	if b0&0x70 != 0 {
		return 0, s.violation(closeProtocol, "reserved bits set, but no extension was agreed")
	}
	switch {
	case !s.client && !masked:
		return 0, s.violation(closeProtocol, "an unmasked frame from the client")
	case s.client && masked:
		return 0, s.violation(closeProtocol, "a masked frame from the server")
	}
	size, hdr := int64(b1&0x7F), 2
	switch size {
	case 126:
		if len(in) < 4 {
			return 0, nil
		}
		size, hdr = int64(binary.BigEndian.Uint16(in[2:4])), 4
	case 127:
		if len(in) < 10 {
			return 0, nil
		}
		u := binary.BigEndian.Uint64(in[2:10])
		if u > 1<<62 {
			return 0, s.violation(closeProtocol, "a frame length with its top bit set")
		}
		size, hdr = int64(u), 10
	}
	var key [4]byte
	if masked {
		if len(in) < hdr+4 {
			return 0, nil
		}
		copy(key[:], in[hdr:hdr+4])
		hdr += 4
	}
	if op >= opClose { // a control frame: handled whole, here
		if op > opPong {
			return 0, s.violation(closeProtocol, fmt.Sprintf("unknown opcode %d", op))
		}
		if !fin || size > maxControlPayload {
			return 0, s.violation(closeProtocol, "a control frame fragmented or over 125 bytes")
		}
		if int64(len(in)) < int64(hdr)+size {
			return 0, nil
		}
		payload := in[hdr : int64(hdr)+size]
		if masked {
			maskBytes(payload, key, 0)
		}
		return hdr + int(size), s.control(op, payload)
	}
	switch {
	case op == opText:
		return 0, s.violation(closeUnsupported, "a text message; tunnels carry binary messages only")
	case op != opBinary && op != opContinuation:
		return 0, s.violation(closeProtocol, fmt.Sprintf("unknown opcode %d", op))
	case op == opContinuation && !s.inMsg:
		return 0, s.violation(closeProtocol, "a continuation with no message open")
	case op == opBinary && s.inMsg:
		return 0, s.violation(closeProtocol, "a new message before the last one ended")
	}
	if op == opBinary {
		s.msgLen = 0
	}
	s.msgLen += size
	if s.msgLen > MaxMessage {
		return 0, s.violation(closeTooBig, fmt.Sprintf("a message over %d bytes", MaxMessage))
	}
	s.inMsg = !fin
	s.remain, s.masked, s.key, s.keyPos = size, masked, key, 0
	return hdr, nil
}

// control answers a ping with a pong and a close with a close, ending
// reads with io.EOF for a normal close and PeerClosedError otherwise.
func (s *wsConn) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		return s.send(opPong, nil, payload)
	case opClose:
		code, reason := closeNoStatusSent, ""
		if len(payload) >= 2 {
			code, reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
		s.sendClose(closeNormal, "")
		if code == closeNormal || code == 1001 || code == closeNoStatusSent {
			return io.EOF
		}
		return &PeerClosedError{Code: code, Reason: reason}
	}
	return nil // a pong
}

// violation closes the WebSocket with code and returns why.
func (s *wsConn) violation(code int, reason string) error {
	s.sendClose(code, reason)
	return &ProtocolViolation{Code: code, Reason: reason}
}

// fail makes err the answer of every later read.
func (s *wsConn) fail(err error) error {
	if err != nil && s.rerr == nil {
		s.rerr = err
		if s.readEnded != nil {
			s.readOnce.Do(func() { close(s.readEnded) })
		}
	}
	return err
}

func (s *wsConn) unmask(b []byte) {
	if s.masked {
		s.keyPos = maskBytes(b, s.key, s.keyPos)
	}
}

// maskBytes XORs b with key from position pos of the key and returns the
// position after b.
func maskBytes(b []byte, key [4]byte, pos int) int {
	if len(b) >= 16 {
		// Align to the key, then eight bytes at a time.
		for ; pos&3 != 0; pos++ {
			b[0] ^= key[pos&3]
			b = b[1:]
		}
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
	return (pos + len(b)) & 3
}

// Write sends p as one binary message, split at MaxMessage.
func (s *wsConn) Write(p []byte) (int, error) {
	total := 0
	for {
		chunk := p[:min(len(p), MaxMessage)]
		if err := s.send(opBinary, nil, chunk); err != nil {
			return total, err
		}
		total += len(chunk)
		p = p[len(chunk):]
		if len(p) == 0 {
			return total, nil
		}
	}
}

// writeMessage sends hdr followed by body as one binary message of at
// most MaxMessage bytes: a yamux frame's header and body, which the
// coalescer would otherwise have to copy together first.
func (s *wsConn) writeMessage(hdr, body []byte) (int, error) {
	if len(hdr)+len(body) > MaxMessage {
		return 0, errors.New("websocket: message over MaxMessage")
	}
	if err := s.send(opBinary, hdr, body); err != nil {
		return 0, err
	}
	return len(hdr) + len(body), nil
}

var errWSClosing = errors.New("websocket: closing")

// send writes one final frame of op whose payload is a then b.
func (s *wsConn) send(op byte, a, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closing {
		return errWSClosing
	}
	if op == opClose {
		s.closing = true
	}
	// The header is built in the connection's own array, under wmu: a
	// local one would move to the heap, as the writes take slices of it.
	hb := &s.hdr
	hb[0] = 0x80 | op
	h := hb[:2]
	switch n := len(a) + len(b); {
	case n <= 125:
		hb[1] = byte(n)
	case n <= 0xFFFF:
		hb[1] = 126
		binary.BigEndian.PutUint16(hb[2:4], uint16(n))
		h = hb[:4]
	default:
		hb[1] = 127
		binary.BigEndian.PutUint64(hb[2:10], uint64(n))
		h = hb[:10]
	}
	if s.client {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], uint32(s.masks.Uint64()))
		hb[1] |= 0x80
		h = append(h, key[:]...)
		return s.sendMasked(h, key, a, b)
	}
	if s.writev {
		s.vec = append(s.vecArr[:0], h, a, b)
		_, err := s.vec.WriteTo(s.Conn)
		s.vec, s.vecArr = nil, [3][]byte{} // let go of the caller's buffers
		return err
	}
	// Join the header, a and the start of b in one Write, up to joinLimit
	// (under TLS, one record rather than three), then the rest of b.
	k := min(len(b), max(joinLimit-len(a), 0))
	bp := wsWriteBufs.Get().(*[]byte)
	buf := append(append(append((*bp)[:0], h...), a...), b[:k]...)
	_, err := s.Conn.Write(buf)
	*bp = buf[:0]
	wsWriteBufs.Put(bp)
	if err == nil && k < len(b) {
		_, err = s.Conn.Write(b[k:])
	}
	return err
}

// sendMasked writes the client's frame: header h, then a and b masked
// with key, copied into a pooled buffer and written a buffer at a time
// (once, unless the message is over BufferSize).
func (s *wsConn) sendMasked(h []byte, key [4]byte, a, b []byte) error {
	pool := &wsWriteBufs
	if len(h)+len(a)+len(b) > joinLimit+maxFrameHeader+headerSize {
		pool = &wsLargeWriteBufs
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf, pos := append((*bp)[:0], h...), 0
	for _, part := range [2][]byte{a, b} {
		for len(part) > 0 {
			if len(buf) == cap(buf) {
				if _, err := s.Conn.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
			k := min(len(part), cap(buf)-len(buf))
			at := len(buf)
			buf = append(buf, part[:k]...)
			pos = maskBytes(buf[at:], key, pos)
			part = part[k:]
		}
	}
	_, err := s.Conn.Write(buf)
	return err
}

// sendClose writes a close frame once, bounded by wsCloseWait.
func (s *wsConn) sendClose(code int, reason string) {
	s.once.Do(func() {
		var b [maxControlPayload]byte
		binary.BigEndian.PutUint16(b[:2], uint16(code))
		n := 2 + copy(b[2:], reason)
		_ = s.Conn.SetWriteDeadline(time.Now().Add(wsCloseWait))
		s.sent = s.send(opClose, nil, b[:n]) == nil
	})
}

// Close sends a normal close frame and closes the connection. The client
// end first waits, at most wsCloseWait, until its reader has seen the
// server answer (RFC 6455 section 7.1.1: the server closes the TCP
// connection first), so the server reads a clean close rather than a
// reset, and the session's reader ends on the answer rather than on a
// closed socket. The server end closes at once.
func (s *wsConn) Close() error {
	s.sendClose(closeNormal, "")
	if s.client && s.sent {
		t := time.NewTimer(wsCloseWait)
		select {
		case <-s.readEnded:
		case <-t.C:
		}
		t.Stop()
	}
	return s.Conn.Close()
}
