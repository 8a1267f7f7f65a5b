package protocol

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Subprotocol is the WebSocket subprotocol both ends must agree on.
const Subprotocol = "postern.v1"

// TunnelPath is the relay endpoint agents dial, relative to the relay URL.
const TunnelPath = "/v1/tunnel"

// Frame size caps. A frame's length prefix counts the type byte and the
// body. Control frames may carry a full allowlist; stream frames are small.
const (
	MaxControlFrame = 4 << 20
	MaxStreamFrame  = 64 << 10
)

// FrameType identifies a frame's body. Zero is invalid on the wire.
type FrameType uint8

// Frame types. Values are part of the wire format; never renumber.
const (
	FrameInvalid FrameType = 0
	FrameHello   FrameType = 1
	FrameWelcome FrameType = 2
	FrameHealth  FrameType = 3
	FrameGoAway  FrameType = 4
	FrameRevoked FrameType = 5
	FrameRequest FrameType = 6
	FrameResult  FrameType = 7
	FrameNotice  FrameType = 8
)

func (t FrameType) String() string {
	switch t {
	case FrameHello:
		return "hello"
	case FrameWelcome:
		return "welcome"
	case FrameHealth:
		return "health"
	case FrameGoAway:
		return "goaway"
	case FrameRevoked:
		return "revoked"
	case FrameRequest:
		return "request"
	case FrameResult:
		return "result"
	case FrameNotice:
		return "notice"
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

// Codec errors. Callers branch on them with errors.Is.
var (
	ErrFrameTooLarge = errors.New("frame exceeds size cap")
	ErrFrameEmpty    = errors.New("frame has no type byte")
	ErrFrameType     = errors.New("unexpected frame type")
)

// Frame is one decoded frame: its type and its raw JSON body.
type Frame struct {
	Type FrameType
	Body []byte
}

// AppendFrame appends the encoding of a frame with the given type and
// JSON-encoded value to dst.
func AppendFrame(dst []byte, t FrameType, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("encode %s: %w", t, err)
	}
	if len(body)+1 > MaxControlFrame {
		return dst, fmt.Errorf("encode %s: %w (%d bytes)", t, ErrFrameTooLarge, len(body)+1)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+1))
	dst = append(dst, byte(t))
	return append(dst, body...), nil
}

// WriteFrame writes one frame in a single Write call, so that frames from
// different goroutines never interleave on a writer that serializes calls.
func WriteFrame(w io.Writer, t FrameType, v any) error {
	buf, err := AppendFrame(nil, t, v)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one frame whose length is at most limit bytes. It never
// allocates more than limit bytes, whatever the length prefix claims.
func ReadFrame(r io.Reader, limit int) (Frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return Frame{}, ErrFrameEmpty
	}
	if uint64(n) > uint64(limit) {
		return Frame{}, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: FrameType(buf[0]), Body: buf[1:]}, nil
}

// Decode unmarshals the frame body into v after checking its type.
// Unknown JSON fields are ignored so that newer peers can add fields.
func (f Frame) Decode(want FrameType, v any) error {
	if f.Type != want {
		return fmt.Errorf("%w: got %s, want %s", ErrFrameType, f.Type, want)
	}
	if err := json.Unmarshal(f.Body, v); err != nil {
		return fmt.Errorf("decode %s: %w", want, err)
	}
	return nil
}
