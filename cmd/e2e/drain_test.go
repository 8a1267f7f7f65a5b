package e2e

import (
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A relay that is told to stop closes its listeners, sends GoAway, and
// lets a stream that is already open finish before it exits.
func TestRelayStopDrainsOpenStreams(t *testing.T) {
	f := newFixture(t)
	f.startAgent(t)
	open := f.connect(t, f.target)
	require.Equal(t, http.StatusOK, open.status)
	first := []byte("the first half of a request, ")
	_, err := open.conn.Write(first)
	require.NoError(t, err)

	served := f.relay.shutdown()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", f.relay.proxyAddr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "a stopping relay takes no new connections")

	second := []byte("and the second half, sent while the relay drains")
	_, err = open.conn.Write(second)
	require.NoError(t, err)
	require.NoError(t, open.conn.(*net.TCPConn).CloseWrite())
	want := sha256.Sum256(append(first, second...))
	digest := make([]byte, sha256.Size)
	_, err = io.ReadFull(open.br, digest)
	require.NoError(t, err, "the open stream survives the relay's stop")
	assert.Equal(t, want[:], digest)
	_, err = io.Copy(io.Discard, open.br)
	require.NoError(t, err)

	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not exit after its last stream ended")
	}
}
