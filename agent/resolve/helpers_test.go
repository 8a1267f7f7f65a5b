package resolve

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is an injectable clock for the cache and hosts-file checks.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

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
