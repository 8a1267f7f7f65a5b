package tunnel

import (
	"crypto/sha1" //nolint:gosec // RFC 6455 fixes SHA-1 for Sec-WebSocket-Accept; it is no security boundary
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The relay's end of a tunnel's WebSocket (RFC 6455, server side, binary
// messages only, no extensions) is the tunnel package's own: the
// WebSocket library's server costs two timeout contexts per frame and
// keeps the HTTP connection's 4 KiB reader and writer for the tunnel's
// whole life. serverConn reads frames in place in the caller's buffer, so
// an idle tunnel at the relay holds no buffer of its own, and writes each
// message with one Write. Agents keep the library's client; the bytes on
// the wire are the same.

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// WebSocket close codes the server sends (RFC 6455 section 7.4.1).
const (
	closeNormal       = 1000
	closeProtocol     = 1002
	closeUnsupported  = 1003
	closeTooBig       = 1009
	closeNoStatusSent = 1005
)

// maxControlPayload is the largest payload of a control frame.
const maxControlPayload = 125

// maxClientHeader is the longest frame header a client sends: two bytes,
// an eight-byte length and the four-byte mask.
const maxClientHeader = 2 + 8 + 4

// wsAcceptGUID is the constant RFC 6455 appends to Sec-WebSocket-Key.
const wsAcceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsCloseWait bounds writing the close frame when the tunnel ends.
const wsCloseWait = time.Second

// wsWriteBufs keeps the buffers that join a message of up to joinLimit
// bytes behind its header when the connection cannot write both in one
// system call (TLS: one record rather than two), so an idle tunnel holds
// none.
var wsWriteBufs = sync.Pool{New: func() any { b := make([]byte, 0, joinLimit+maxClientHeader); return &b }}

// ProtocolViolation is a WebSocket frame the relay refused; the tunnel
// was closed with Code.
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

// acceptWebSocket checks a WebSocket opening request, answering its
// refusal itself, then hijacks the connection and answers 101 with
// subprotocol when the request offers it.
func acceptWebSocket(w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, []byte, error) {
	if code, err := checkOpening(w, r); err != nil {
		http.Error(w, err.Error(), code)
		return nil, nil, err
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return nil, nil, fmt.Errorf("websocket: hijack: %w", err)
	}
	// Bytes the client sent behind its request are the tunnel's first.
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	early = append([]byte(nil), early...)
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	if OffersSubprotocol(r, subprotocol) {
		b.WriteString("\r\nSec-WebSocket-Protocol: " + subprotocol)
	}
	b.WriteString("\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("websocket: answering 101: %w", err)
	}
	return conn, early, nil
}

// checkOpening returns the status and the reason a request is no valid
// WebSocket opening handshake, or nil.
func checkOpening(w http.ResponseWriter, r *http.Request) (int, error) {
	switch {
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, fmt.Errorf("websocket: the opening handshake is a GET, not %s", r.Method)
	case !r.ProtoAtLeast(1, 1):
		return http.StatusUpgradeRequired, fmt.Errorf("websocket: the opening handshake needs HTTP/1.1, not %s", r.Proto)
	case !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, errors.New("websocket: the request asks for no upgrade to websocket (Connection: Upgrade, Upgrade: websocket)")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, fmt.Errorf("websocket: version %q; this server speaks 13", r.Header.Get("Sec-WebSocket-Version"))
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		return http.StatusBadRequest, errors.New("websocket: Sec-WebSocket-Key is not 16 bytes in base64")
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameHost(origin, r.Host) {
		// A browser page of another site: tunnels come from agents,
		// which send no Origin.
		return http.StatusForbidden, fmt.Errorf("websocket: origin %q is not this host", origin)
	}
	return 0, nil
}

// hasToken reports whether a comma-separated header holds token, in any
// case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// sameHost reports whether origin (scheme://host[:port]) names host.
func sameHost(origin, host string) bool {
	_, rest, ok := strings.Cut(origin, "://")
	return ok && strings.EqualFold(rest, host)
}

// wsAccept is the Sec-WebSocket-Accept answer to key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsAcceptGUID)) //nolint:gosec // see the import
	return base64.StdEncoding.EncodeToString(h[:])
}

// serverConn is a net.Conn whose byte stream is the payloads of the
// binary messages of a WebSocket's server end.
type serverConn struct {
	net.Conn
	writev bool // Conn writes net.Buffers in one system call

	rmu     sync.Mutex
	held    []byte    // wire bytes read but not yet parsed
	heldBuf [256]byte // held's storage, unless early bytes were more
	remain  int64     // payload bytes left in the current data frame
	key     [4]byte   // its mask
	keyPos  int
	msgLen  int64 // payload bytes of the open message so far
	inMsg   bool  // a message is open: continuations may follow
	rerr    error // sticky: once reading failed, it keeps failing

	wmu     sync.Mutex
	closing bool // a close frame went out: nothing more may
	once    sync.Once
}

// newServerConn returns the server end of a WebSocket on c, whose client
// already sent early bytes behind its opening request.
func newServerConn(c net.Conn, early []byte) *serverConn {
	s := &serverConn{Conn: c}
	_, s.writev = c.(*net.TCPConn)
	if len(early) > len(s.heldBuf) {
		s.held = early
	} else {
		s.held = append(s.heldBuf[:0], early...)
	}
	return s
}

// NetConn returns the connection underneath.
func (s *serverConn) NetConn() net.Conn { return s.Conn }

// Read reads payload bytes of binary messages into p, answering pings
// and a close on the way. Frames that arrive in one read into a large p
// are parsed in p itself; otherwise bytes wait in the held buffer, so
// the only buffer an idle tunnel has is the caller's.
func (s *serverConn) Read(p []byte) (int, error) {
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
func (s *serverConn) parse(in, p []byte) (int, error) {
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
func (s *serverConn) frame(in []byte) (int, error) {
	if len(in) < 2 {
		return 0, nil
	}
	b0, b1 := in[0], in[1]
	fin, op := b0&0x80 != 0, b0&0x0F
	if b0&0x70 != 0 {
		return 0, s.violation(closeProtocol, "reserved bits set, but no extension was agreed")
	}
	if b1&0x80 == 0 {
		return 0, s.violation(closeProtocol, "an unmasked frame from the client")
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
	if len(in) < hdr+4 {
		return 0, nil
	}
	var key [4]byte
	copy(key[:], in[hdr:hdr+4])
	hdr += 4
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
		maskBytes(payload, key, 0)
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
	s.remain, s.key, s.keyPos = size, key, 0
	return hdr, nil
}

// control answers a ping with a pong and a close with a close, ending
// reads with io.EOF for a normal close and PeerClosedError otherwise.
func (s *serverConn) control(op byte, payload []byte) error {
	switch op {
	case opPing:
		return s.writeFrame(opPong, payload)
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
func (s *serverConn) violation(code int, reason string) error {
	s.sendClose(code, reason)
	return &ProtocolViolation{Code: code, Reason: reason}
}

// fail makes err the answer of every later read.
func (s *serverConn) fail(err error) error {
	if err != nil && s.rerr == nil {
		s.rerr = err
	}
	return err
}

func (s *serverConn) unmask(b []byte) {
	s.keyPos = maskBytes(b, s.key, s.keyPos)
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
func (s *serverConn) Write(p []byte) (int, error) {
	total := 0
	for {
		chunk := p[:min(len(p), MaxMessage)]
		if err := s.writeFrame(opBinary, chunk); err != nil {
			return total, err
		}
		total += len(chunk)
		p = p[len(chunk):]
		if len(p) == 0 {
			return total, nil
		}
	}
}

var errWSClosing = errors.New("websocket: closing")

// writeFrame writes one unmasked final frame: in one vectored system call
// on TCP, joined in one Write up to joinLimit, else header and payload
// in two.
func (s *serverConn) writeFrame(op byte, payload []byte) error {
	var hb [10]byte
	hb[0] = 0x80 | op
	h := hb[:2]
	switch n := len(payload); {
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
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closing {
		return errWSClosing
	}
	if op == opClose {
		s.closing = true
	}
	switch {
	case s.writev:
		bufs := net.Buffers{h, payload}
		_, err := bufs.WriteTo(s.Conn)
		return err
	case len(payload) <= joinLimit:
		bp := wsWriteBufs.Get().(*[]byte)
		buf := append(append((*bp)[:0], h...), payload...)
		_, err := s.Conn.Write(buf)
		*bp = buf[:0]
		wsWriteBufs.Put(bp)
		return err
	}
	if _, err := s.Conn.Write(h); err != nil {
		return err
	}
	_, err := s.Conn.Write(payload)
	return err
}

// sendClose writes a close frame once, bounded by wsCloseWait.
func (s *serverConn) sendClose(code int, reason string) {
	s.once.Do(func() {
		var b [maxControlPayload]byte
		binary.BigEndian.PutUint16(b[:2], uint16(code))
		n := 2 + copy(b[2:], reason)
		_ = s.Conn.SetWriteDeadline(time.Now().Add(wsCloseWait))
		_ = s.writeFrame(opClose, b[:n])
	})
}

// Close sends a normal close frame and closes the connection.
func (s *serverConn) Close() error {
	s.sendClose(closeNormal, "")
	return s.Conn.Close()
}
