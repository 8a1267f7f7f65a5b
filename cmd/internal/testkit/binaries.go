package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds building both binaries; a hung toolchain fails the
// test that asked instead of eating the whole test timeout.
const buildTimeout = 5 * time.Minute

// built is the one piece of package state, on purpose: the binaries are
// built once per test binary, whichever test asks first, and every later
// test reuses them. Building takes tens of seconds; per test it would
// dominate the run.
var built struct {
	once         sync.Once
	dir          string
	relay, agent string
	err          error
}

// Binaries returns the paths of postern-relay and postern-agent, built
// static (CGO_ENABLED=0) and with -trimpath, the way they ship. The first
// call builds them into a temporary directory; a failed build fails every
// caller's test with go build's output. TestMain removes the directory
// through Main.
func Binaries(tb testing.TB) (relayBin, agentBin string) {
	tb.Helper()
	built.once.Do(build)
	if built.err != nil {
		tb.Fatal(built.err)
	}
	return built.relay, built.agent
}

func build() {
	dir, err := os.MkdirTemp("", "postern-testkit-bin-")
	if err != nil {
		built.err = fmt.Errorf("binaries: %w", err)
		return
	}
	built.dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	for _, name := range []string{"postern-relay", "postern-agent"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, name),
			"github.com/postern/postern/cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build %s: %w\n%s", name, err, out)
			return
		}
	}
	built.relay, built.agent = filepath.Join(dir, "postern-relay"), filepath.Join(dir, "postern-agent")
}

// RemoveBinaries deletes what Binaries built, if anything. Call it after
// the package's tests have run; Main does.
func RemoveBinaries() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// Tests runs a package's tests and then removes the binaries they built.
type Tests struct{ m *testing.M }

// Main wraps m for a TestMain: os.Exit(testkit.Main(m).Run()). Run has the
// shape of testing.M's, so goleak.VerifyTestMain(testkit.Main(m)) works
// too.
func Main(m *testing.M) Tests { return Tests{m: m} }

// Run runs the tests and removes the binaries, returning the tests' exit
// code.
func (t Tests) Run() int {
	defer RemoveBinaries()
	return t.m.Run()
}
