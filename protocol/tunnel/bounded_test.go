package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
)

// A frame over the reader's own limit for its type is skipped without
// being held; the frames around it are read as they were sent.
func TestReadBoundedSkipsWhatItWillNotHold(t *testing.T) {
	t.Parallel()
	var wire bytes.Buffer
	require.NoError(t, protocol.WriteFrame(&wire, protocol.FrameHealth, map[string]int{"n": 1}))
	require.NoError(t, protocol.WriteFrame(&wire, protocol.FrameType(99), map[string]string{"junk": strings.Repeat("u", 3<<20)}))
	require.NoError(t, protocol.WriteFrame(&wire, protocol.FrameHealth, map[string]string{"big": strings.Repeat("b", 2048)}))
	require.NoError(t, protocol.WriteFrame(&wire, protocol.FrameHealth, map[string]int{"n": 2}))
	limit := func(t protocol.FrameType) int {
		if t == protocol.FrameHealth {
			return 1024
		}
		return 0
	}

	f, err := readBounded(&wire, limit)
	require.NoError(t, err)
	assert.JSONEq(t, `{"n":1}`, string(f.Body))

	f, err = readBounded(&wire, limit)
	require.ErrorIs(t, err, ErrOverLimit, "a type read past")
	assert.Equal(t, protocol.FrameType(99), f.Type)
	assert.Nil(t, f.Body)

	f, err = readBounded(&wire, limit)
	require.ErrorIs(t, err, ErrOverLimit)
	assert.Equal(t, protocol.FrameHealth, f.Type)
	assert.Contains(t, err.Error(), "more than 1024")

	f, err = readBounded(&wire, limit)
	require.NoError(t, err)
	assert.JSONEq(t, `{"n":2}`, string(f.Body), "the stream is where it should be")

	_, err = readBounded(&wire, limit)
	assert.ErrorIs(t, err, io.EOF)
}

func TestReadBoundedKeepsTheProtocolCap(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		wire  []byte
		limit int
		want  error
	}{
		"empty frame":     {wire: []byte{0, 0, 0, 0}, limit: 1 << 20, want: protocol.ErrFrameEmpty},
		"over the cap":    {wire: binary.BigEndian.AppendUint32(nil, protocol.MaxControlFrame+1), limit: 1 << 20, want: protocol.ErrFrameTooLarge},
		"cut in its body": {wire: append(binary.BigEndian.AppendUint32(nil, 10), 3, '{'), limit: 1 << 20, want: io.ErrUnexpectedEOF},
		"cut in a skip":   {wire: append(binary.BigEndian.AppendUint32(nil, 10), 99, '{'), limit: 0, want: io.ErrUnexpectedEOF},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := readBounded(bytes.NewReader(tc.wire), func(protocol.FrameType) int { return tc.limit })
			assert.ErrorIs(t, err, tc.want)
		})
	}
}
