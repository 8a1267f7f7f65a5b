package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
)

// startProc starts bin. Its cleanup stops it the way an operator stops a
// binary that may be draining streams: SIGTERM, a second SIGTERM after
// 5 s that forces the stop, SIGKILL 10 s after that. How it exits is not
// checked: these tests stop, freeze and kill processes on purpose.
func startProc(t *testing.T, name, bin string, args ...string) *testkit.Process {
	t.Helper()
	p := testkit.Start(t, name, bin, args...)
	t.Cleanup(func() {
		if err := p.StopForced(5*time.Second, 10*time.Second); err != nil {
			t.Log(err)
		}
	})
	return p
}

// usage reads what /proc says about p; failing to is a test bug.
func usage(t *testing.T, p *testkit.Process) testkit.Usage {
	t.Helper()
	u, err := p.Usage()
	require.NoError(t, err, "read /proc of %s", p.Name())
	return u
}
