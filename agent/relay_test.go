package agent

import (
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/protocol/tunnel/tunneltest"
)

// testToken is the agent token every fake relay expects.
const testToken = "pst_tok123_s3cr3t"

// waitTimeout bounds every wait in these tests; nothing legitimate takes
// this long, so hitting it means a hang.
const waitTimeout = 5 * time.Second

// newFakeRelay starts a relay that accepts testToken and asks for Health
// every heartbeat.
func newFakeRelay(t *testing.T, heartbeat time.Duration) *tunneltest.Relay {
	t.Helper()
	return tunneltest.NewRelay(t, tunneltest.RelayOptions{Token: testToken, Heartbeat: heartbeat})
}

var requestSeq atomic.Int64

// dialRequest is a dial request with a deadline, the way the relay sends one.
func dialRequest(host string, port int) protocol.Request {
	return protocol.Request{
		Op:             protocol.OpDial,
		ID:             "req-" + strconv.FormatInt(requestSeq.Add(1), 10),
		Host:           host,
		Port:           port,
		DeadlineUnixMS: time.Now().Add(waitTimeout).UnixMilli(),
	}
}

// exchange writes msg on a dialled stream, half-closes it and returns
// everything read until the agent closes its side.
func exchange(t *testing.T, st *tunnel.Stream, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	require.NoError(t, st.CloseWrite())
	got, err := io.ReadAll(st)
	require.NoError(t, err)
	return string(got)
}

// roundTrip writes msg and reads len(msg) bytes back, leaving the stream open.
func roundTrip(t *testing.T, st net.Conn, msg string) string {
	t.Helper()
	_, err := io.WriteString(st, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(st, buf)
	require.NoError(t, err)
	return string(buf)
}
