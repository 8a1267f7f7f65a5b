package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
)

// A reload that adds a blocked entry applies to the next stream without
// dropping the tunnel; the local status lists the entry and the relay
// sees the new digest.
func TestReloadAppliesTheBlockedList(t *testing.T) {
	relay := testkit.NewRelay(t, time.Second)
	tg := testkit.NewTarget(t, "127.0.0.1:0", testkit.Echo)
	path := filepath.Join(t.TempDir(), "agent.yaml")
	write := func(extra string) {
		t.Helper()
		body := fmt.Sprintf("relay_url: %s\ntunnels: 1\nallow:\n  - cidr: 10.0.0.0/8\n    ports: [443]\n%s", relay.URL(), extra)
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	}
	load := func() (*config.Config, error) { return config.Load(path, nil) }
	write("")
	cfg, err := load()
	require.NoError(t, err)
	dial := &testkit.DialLog{To: tg.Addr()}
	a := runAgent(t, Options{Config: cfg, Dial: dial.Dial})
	s := relay.Session(t)

	res, st := s.Dial(t, testkit.DialRequest("10.9.0.5", 443))
	require.True(t, res.OK, "%+v", res)
	assert.Equal(t, "before", testkit.RoundTrip(t, st, "before"))
	before := a.Policy().Summary.SHA256
	assert.Empty(t, a.Status().Allowlist.Blocked)

	write("blocked:\n  - 10.9.0.0/16\n")
	require.NoError(t, a.Reload(load))
	assert.Equal(t, []string{"10.9.0.0/16"}, a.Status().Allowlist.Blocked)
	assert.NotEqual(t, before, a.Policy().Summary.SHA256, "the digest covers the blocked list")

	res, _ = s.Dial(t, testkit.DialRequest("10.9.0.5", 443))
	assert.False(t, res.OK)
	assert.Equal(t, protocol.TargetBlocked, res.Reason, "%+v", res)
	assert.Equal(t, "blocked cidr=10.9.0.0/16", res.Rule)
	assert.Equal(t, []string{"10.9.0.5:443"}, dial.Addrs(), "the blocked address is not dialled again")
	res, st = s.Dial(t, testkit.DialRequest("10.10.0.5", 443))
	require.True(t, res.OK, "the rest of the block is still allowed: %+v", res)
	assert.Equal(t, "after", testkit.RoundTrip(t, st, "after"))

	require.Eventually(t, func() bool {
		hs := s.Healths()
		return len(hs) > 0 && hs[len(hs)-1].Allowlist.SHA256 == a.Policy().Summary.SHA256
	}, testkit.WaitTimeout, 10*time.Millisecond, "health reports the new digest")
	assert.False(t, s.Closed(), "a reload keeps the tunnel")

	write("blocked:\n  - 10.9.0.0/33\n")
	err = a.Reload(load)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `agent.yaml:7: blocked[0]: "10.9.0.0/33"`)
	assert.Equal(t, "invalid", a.Policy().Summary.Status)
	assert.Equal(t, []string{"10.9.0.0/16"}, a.Status().Allowlist.Blocked, "a bad file keeps the list in force")
}
