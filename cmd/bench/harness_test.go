package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHarnessRoundTrip checks, quickly, that the benchmark measures what
// it claims: bytes really cross the tunnel intact, the HTTP client really
// goes through CONNECT, and refusals surface as errors.
func TestHarnessRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	t.Run("echo through the tunnel", func(t *testing.T) {
		c, err := e.stack.dialTunnel(ctx, e.sink.addr())
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		payload := bytes.Repeat(e.pattern, 4) // 1 MiB
		var hdr [headerLen]byte
		hdr[0] = opEcho
		binary.BigEndian.PutUint64(hdr[1:], uint64(len(payload)))
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(append(hdr[:], payload...))
			errc <- err
		}()
		got := make([]byte, len(payload))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		require.NoError(t, <-errc)
		assert.True(t, bytes.Equal(payload, got), "echoed bytes differ")
	})

	for name, mode := range map[string]dialFunc{"direct": dialDirect, "tunnel": e.stack.dialTunnel} {
		t.Run("bulk "+name, func(t *testing.T) {
			for _, op := range []byte{opUpload, opDownload} {
				mbps, err := bulk(ctx, mode, e.sink.addr(), op, 2, 4<<20, e.pattern)
				require.NoError(t, err, "op %q", op)
				assert.Positive(t, mbps)
			}
		})
	}

	t.Run("http through the tunnel", func(t *testing.T) {
		var dials int
		tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			dials++
			return e.stack.dialTunnel(ctx, addr)
		}}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for range 3 {
			require.NoError(t, get(ctx, hc, "http://"+e.web.addr()+"/"))
		}
		assert.Equal(t, 1, dials, "keep-alive reuses the tunnelled connection")
	})

	t.Run("refused target is an error", func(t *testing.T) {
		_, err := e.stack.dialTunnel(ctx, "10.1.2.3:443")
		require.ErrorIs(t, err, errRefused)
		assert.Contains(t, err.Error(), "ALLOWLIST_MISSING")
	})

	t.Run("process cpu time is readable", func(t *testing.T) {
		relay, agent, err := e.stack.cpuTime()
		require.NoError(t, err)
		assert.GreaterOrEqual(t, relay, time.Duration(0))
		assert.GreaterOrEqual(t, agent, time.Duration(0))
	})

	t.Run("peak rss is readable", func(t *testing.T) {
		relay, agent, err := e.stack.peakRSS()
		require.NoError(t, err)
		assert.Greater(t, relay, int64(1<<20))
		assert.Greater(t, agent, int64(1<<20))
	})
}

func TestTableMediansAndRatio(t *testing.T) {
	var tab table
	r := tab.reset("x", "MB/s", true)
	r.direct = []float64{100, 300, 200}
	r.tunnel = []float64{50, 10, 40, 30}
	assert.InDelta(t, 35.0/200, r.ratio(), 1e-9)
	again := tab.reset("x", "MB/s", true)
	assert.Same(t, r, again)
	assert.Empty(t, again.direct, "reset clears the probe run's samples")
	var out bytes.Buffer
	require.NoError(t, tab.write(&out))
	assert.Contains(t, out.String(), "x (MB/s)")
}

func TestTableFiguresShowTheirVerdict(t *testing.T) {
	var tab table
	tab.addFigure(figure{name: "restart: kill to every tunnel back", value: "61.0 s", target: "<= 60.0 s", judged: true})
	tab.addFigure(figure{name: "relay CPU per idle agent", value: "3.00 µs/s"})
	var out bytes.Buffer
	require.NoError(t, tab.write(&out))
	assert.Contains(t, out.String(), "Figures with targets (memory, scale, TLS):")
	assert.Regexp(t, `restart: kill to every tunnel back +\| +61\.0 s \| <= 60\.0 s \| +MISSED`, out.String())
	assert.Regexp(t, `relay CPU per idle agent +\| +3\.00 µs/s \| +- \| +-`, out.String())
}
