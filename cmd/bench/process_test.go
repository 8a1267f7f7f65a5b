package bench

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/postern/postern/cmd/internal/testkit"
)

// stopTimeout bounds how long a binary may take to exit after SIGTERM.
const stopTimeout = 15 * time.Second

// startProcess starts bin with env added to its environment. When the run ends the binary must still be
// running and exit cleanly within stopTimeout of SIGTERM: one that died
// or hung during a measurement makes the numbers worthless.
func startProcess(tb testing.TB, name, bin string, env []string, args ...string) *testkit.Process {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := testkit.StartCmd(tb, name, cmd)
	tb.Cleanup(func() {
		exitedEarly := p.Exited()
		err := p.Stop(stopTimeout)
		if exitedEarly {
			err = fmt.Errorf("%s exited before it was stopped: %v", name, p.Err())
		}
		if err != nil {
			tb.Errorf("%v\n%s output (tail):\n%s", err, name, p.Output())
		}
	})
	return p
}
