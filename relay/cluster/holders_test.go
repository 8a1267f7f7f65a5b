package cluster

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/store"
)

func TestHolderCache(t *testing.T) {
	t.Parallel()
	var c holderCache
	reads := 0
	held := []store.Presence{{SessionID: "s1", NodeID: "node-a"}}
	read := func(context.Context, string) ([]store.Presence, error) {
		reads++
		return held, nil
	}
	for range 3 {
		ps, err := c.presence(t.Context(), "conn_1", read)
		require.NoError(t, err)
		assert.Equal(t, held, ps)
	}
	assert.Equal(t, 1, reads, "fresh holders come from memory")

	c.forget("conn_1")
	_, _ = c.presence(t.Context(), "conn_1", read)
	assert.Equal(t, 2, reads, "a holder that no longer holds sends the next request to the store")

	held = nil
	_, _ = c.presence(t.Context(), "conn_2", read)
	held = []store.Presence{{SessionID: "s2", NodeID: "node-b"}}
	ps, _ := c.presence(t.Context(), "conn_2", read)
	assert.Equal(t, held, ps, "held nowhere is never cached: a tunnel that just came up is used at once")
	assert.Equal(t, 4, reads)
}
