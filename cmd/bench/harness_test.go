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

func TestParseVmHWM(t *testing.T) {
	tests := map[string]struct {
		status  string
		want    int64
		wantErr bool
	}{
		"typical":       {status: "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n", want: 1234 << 10},
		"last line":     {status: "VmHWM: 1 kB", want: 1 << 10},
		"missing":       {status: "Name:\tx\nVmRSS:\t1000 kB\n", wantErr: true},
		"wrong unit":    {status: "VmHWM:\t1234 MB\n", wantErr: true},
		"not a number":  {status: "VmHWM:\tlots kB\n", wantErr: true},
		"no value":      {status: "VmHWM:\n", wantErr: true},
		"empty":         {status: "", wantErr: true},
		"prefix only":   {status: "XVmHWM:\t5 kB\n", wantErr: true},
		"value too big": {status: "VmHWM:\t99999999999999999999 kB\n", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseVmHWM(tc.status)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseVmHWM(f *testing.F) {
	for _, s := range []string{"VmHWM:\t1234 kB\n", "VmHWM: kB", "VmHWM:\t-1 kB\n", "", "VmHWM:\t1 kB\nVmHWM:\t2 kB\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseVmHWM(s); err == nil && !bytes.Contains([]byte(s), []byte("VmHWM:")) {
			t.Fatalf("parsed a status with no VmHWM line: %q", s)
		}
	})
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	tb := newTailBuffer(8)
	for _, s := range []string{"hello ", "wide ", "world"} {
		n, err := tb.Write([]byte(s))
		require.NoError(t, err)
		assert.Equal(t, len(s), n)
	}
	assert.Equal(t, "e world", tb.String()[1:])
	assert.Len(t, tb.String(), 8)
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

func TestParseCPUTime(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	tests := map[string]struct {
		stat    string
		want    time.Duration
		wantErr bool
	}{
		"typical": {
			stat: "4242 (postern-relay) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0" + tail,
			want: 175 * clockTick,
		},
		"name with spaces and parens": {
			stat: "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0" + tail,
			want: 7 * clockTick,
		},
		"no name":     {stat: "7 R 1 7 7 0 -1 0 0 0 0 0 3 4", wantErr: true},
		"short":       {stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 3", wantErr: true},
		"not numeric": {stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 three 4 0", wantErr: true},
		"negative":    {stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4 0", wantErr: true},
		"empty":       {stat: "", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseCPUTime(tc.stat)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseCPUTime(f *testing.F) {
	f.Add("1 (x) S 1 1 1 0 -1 0 0 0 0 0 150 25 0 0")
	f.Add("1 (a) b) S")
	f.Add(")")
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseCPUTime(s); err == nil && d < 0 {
			t.Fatalf("negative cpu time %v from %q", d, s)
		}
	})
}
