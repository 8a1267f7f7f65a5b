package testkit

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTailBufferKeepsTheEnd(t *testing.T) {
	tb := newTailBuffer(8)
	for _, s := range []string{"hello ", "wide ", "world"} {
		n, err := tb.Write([]byte(s))
		require.NoError(t, err)
		assert.Equal(t, len(s), n)
	}
	assert.Equal(t, "e world", tb.String()[1:])
	assert.Len(t, tb.String(), 8)
}

// Writers from several goroutines (a child's stdout and stderr) leave the
// buffer holding exactly its limit, ending with the last write.
func TestTailBufferConcurrentWriters(t *testing.T) {
	tb := newTailBuffer(100)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				_, _ = tb.Write([]byte("0123456789"))
			}
		})
	}
	wg.Wait()
	_, _ = tb.Write([]byte("the end"))
	assert.Len(t, tb.String(), 100)
	assert.True(t, strings.HasSuffix(tb.String(), "the end"))
}
