package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/internal/testkit"
	"github.com/postern/postern/protocol"
)

// The relay's DUPLICATE_AGENT notices, one per tunnel, make the status
// say "duplicate" until every tunnel that got one is cleared or gone, and
// the log says so once when it starts and once when it ends.
func TestDuplicateNoticeShowsInStatusUntilCleared(t *testing.T) {
	var logs bytes.Buffer
	cfg := testkit.ParseConfig(t, "relay_url: ws://127.0.0.1:1\ntunnels: 2\nallow: []\n")
	a, err := New(testOptions(t, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	require.NoError(t, err)
	b, err := New(testOptions(t, Options{Config: cfg}))
	require.NoError(t, err)
	assert.NotEqual(t, a.Status().InstanceID, b.Status().InstanceID, "each run has its own instance id")
	assert.Len(t, a.Status().InstanceID, 16)
	assert.Equal(t, a.instanceID, reporter{a}.Hello().InstanceID, "Hello carries the instance id")

	dup := protocol.Notice{Code: protocol.NoticeDuplicateAgent, Message: `agent id "x" is used by 2 agent processes at once`}
	a.notice(0, dup)
	a.notice(1, dup)
	st := a.Status()
	assert.True(t, st.Duplicate)
	assert.Equal(t, []Warning{{Code: "DUPLICATE_AGENT", Message: dup.Message}}, st.Warnings)

	a.notice(0, protocol.Notice{Code: protocol.NoticeDuplicateAgent, Cleared: true})
	assert.True(t, a.Status().Duplicate, "tunnel 1 was not cleared")
	a.setTunnel(1, nil) // that tunnel ended: its notice goes with it
	st = a.Status()
	assert.False(t, st.Duplicate)
	assert.Empty(t, st.Warnings)

	a.notice(0, protocol.Notice{Code: "SOMETHING_NEW", Message: "from a newer relay"})
	assert.False(t, a.Status().Duplicate, "an unknown notice is no duplicate")
	assert.Equal(t, 1, strings.Count(logs.String(), "duplicate agent: another postern-agent process is connected with this agent_id"), logs.String())
}
