package testkit

import (
	"bufio"
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// FollowEvents opens a relay's event stream at url (…/v1/events) with API
// key key, requires it to be open (200), and reads it on a goroutine of its
// own until it ends: the channel returned closes then. The test's end
// closes the stream.
func FollowEvents(tb testing.TB, url, key string) <-chan struct{} {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(tb, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	require.Equal(tb, http.StatusOK, resp.StatusCode, "event stream at %s", url)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		}
	}()
	return done
}
