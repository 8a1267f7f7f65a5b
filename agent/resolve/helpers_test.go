package resolve

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is an injectable clock for the cache and hosts-file checks:
// nanoseconds since the epoch, atomic because the resolver may read it
// from its own goroutines.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testConfig is a Config that ignores the machine's resolv.conf and hosts file.
func testConfig(t *testing.T, servers ...string) Config {
	t.Helper()
	dir := t.TempDir()
	return Config{
		Servers:    servers,
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		HostsFile:  filepath.Join(dir, "hosts"),
		Timeout:    time.Second,
		Attempts:   2,
	}
}

func newResolver(t *testing.T, cfg Config) *Resolver {
	t.Helper()
	r, err := New(cfg)
	require.NoError(t, err)
	return r
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
}
