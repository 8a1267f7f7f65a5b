package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a net.Conn that records each Write as one message, as a
// WebSocket NetConn does.
type recorder struct {
	net.Conn
	msgs [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.msgs = append(r.msgs, append([]byte(nil), p...))
	return len(p), nil
}

func header(typ byte, length uint32) []byte {
	h := make([]byte, headerSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:8], 3)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

func TestDataHeaderJoinsItsBody(t *testing.T) {
	rec := &recorder{}
	c := newCoalescer(rec, nil)
	body := bytes.Repeat([]byte("x"), 100)
	n, err := c.Write(header(typeData, 100))
	require.NoError(t, err)
	assert.Equal(t, headerSize, n)
	assert.Empty(t, rec.msgs, "a data header waits for its body")
	n, err = c.Write(body)
	require.NoError(t, err)
	assert.Equal(t, len(body), n)
	require.Len(t, rec.msgs, 1)
	assert.Equal(t, append(header(typeData, 100), body...), rec.msgs[0])
}

func TestHeadersWithoutBodyPassStraightThrough(t *testing.T) {
	tests := map[string][]byte{
		"window update":       header(1, 65536),
		"ping":                header(2, 7),
		"go away":             header(3, 0),
		"data with no length": header(typeData, 0), // a bare FIN/SYN
	}
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			_, err := newCoalescer(rec, nil).Write(h)
			require.NoError(t, err)
			require.Len(t, rec.msgs, 1, "sent at once, never held")
		})
	}
}

func TestLargeBodiesAreSplitAtMaxMessage(t *testing.T) {
	rec := &recorder{}
	c := newCoalescer(rec, nil)
	body := bytes.Repeat([]byte("y"), 2*MaxMessage+10)
	_, err := c.Write(header(typeData, uint32(len(body))))
	require.NoError(t, err)
	n, err := c.Write(body)
	require.NoError(t, err)
	assert.Equal(t, len(body), n)
	var joined []byte
	for _, m := range rec.msgs {
		assert.LessOrEqual(t, len(m), MaxMessage)
		joined = append(joined, m...)
	}
	assert.Equal(t, append(header(typeData, uint32(len(body))), body...), joined, "byte stream unchanged")
}

func TestBatchedSmallFrameIsOneMessageAndLargeIsTwoInOneSocketWrite(t *testing.T) {
	for name, tc := range map[string]struct {
		body     int
		messages int
	}{
		"a request-sized body joins its header": {100, 1},
		"a body at the join limit joins too":    {joinLimit, 1},
		"a bulk body is not copied":             {joinLimit + 1, 2},
	} {
		t.Run(name, func(t *testing.T) {
			socket := &countingConn{Conn: &recorder{}}
			b := &batch{Conn: socket}
			ws := &recorder{}
			// What the WebSocket writes reaches the batch, as it does over
			// the real socket.
			c := newCoalescer(&through{recorder: ws, to: b}, b)
			body := bytes.Repeat([]byte("z"), tc.body)
			_, err := c.Write(header(typeData, uint32(len(body))))
			require.NoError(t, err)
			n, err := c.Write(body)
			require.NoError(t, err)
			assert.Equal(t, len(body), n)
			assert.Len(t, ws.msgs, tc.messages)
			assert.Equal(t, 1, socket.count(), "header and body leave in one system call")
			var joined []byte
			for _, m := range ws.msgs {
				joined = append(joined, m...)
			}
			assert.Equal(t, append(header(typeData, uint32(len(body))), body...), joined, "byte stream unchanged")
		})
	}
}

// through records each message and passes it on to the batch below.
type through struct {
	*recorder
	to *batch
}

func (t *through) Write(p []byte) (int, error) {
	_, _ = t.recorder.Write(p)
	return t.to.Write(p)
}
