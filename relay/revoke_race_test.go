package relay

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/store"
)

// lateRevokeStore runs a hook right after the first lookup of one
// connection once armed: the lookup's answer is then already stale.
type lateRevokeStore struct {
	store.Store

	mu   sync.Mutex
	id   string
	hook func()
}

func (s *lateRevokeStore) arm(id string, hook func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.id, s.hook = id, hook
}

func (s *lateRevokeStore) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c, err := s.Store.GetConnection(ctx, id)
	s.mu.Lock()
	var hook func()
	if id == s.id {
		hook, s.hook, s.id = s.hook, nil, ""
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return c, err
}

// A revocation that lands between an agent's authentication and the
// registration of its tunnel must still close that tunnel.
func TestRevokeDuringHandshakeClosesTunnel(t *testing.T) {
	t.Parallel()
	st := &lateRevokeStore{}
	h, c := newConnHarness(t, "", func(c *Config) { st.Store = c.Store; c.Store = st })

	// Exactly what the revoke handler does, at the worst moment.
	st.arm(c.ID, func() {
		_, err := st.Store.RevokeConnection(context.Background(), c.ID, time.Now().UTC())
		if err == nil {
			h.srv.broker.CloseConnection(c.ID, "connection revoked by an administrator")
		}
	})
	// Authentication saw the connection before the revocation, so the
	// handshake completes.
	a, _, err := h.dialAgent(t, c.AgentToken, testHello("agent-1", 1), echo)
	require.NoError(t, err)
	select {
	case <-a.Session.Done():
	case <-time.After(time.Second):
		require.FailNow(t, "a tunnel of a revoked connection stayed up")
	}
	var saw bool
	for f := range a.Control() {
		saw = saw || f.Type == protocol.FrameRevoked
	}
	assert.True(t, saw, "the agent is told why")
	h.waitTunnels(t, c.ID, 0)
	assert.Equal(t, "revoked", h.status(t, c.ID, "").TunnelStatus)
}
