package debugserve

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

func TestOffWithoutTheVariable(t *testing.T) {
	t.Setenv(EnvVar, "")
	stop, err := Start(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	stop()
}

func TestRefusesAnAddressOffLoopback(t *testing.T) {
	for name, addr := range map[string]string{
		"any address": ":6060",
		"unspecified": "0.0.0.0:6060",
		"a LAN ip":    "10.0.0.5:6060",
		"a host name": "example.com:6060",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(EnvVar, addr)
			_, err := Start(slog.New(slog.DiscardHandler))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "POSTERN_DEBUG_LISTEN=\""+addr+"\": profiles are served on a loopback address only")
		})
	}
}

func TestServesProfilesOnLoopback(t *testing.T) {
	addr := testkit.FreeAddr(t)
	t.Setenv(EnvVar, addr)
	stop, err := Start(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer stop()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/debug/pprof/")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "allocs")
	code, _ = get("/debug/pprof/allocs?debug=0")
	assert.Equal(t, http.StatusOK, code)
	code, body = get("/debug/pprof/profile?seconds=3600")
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "seconds \"3600\": must be 0 to 60")
}
