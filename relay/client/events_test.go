package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/store/sqlite"
)

// sseRelay streams body as text/event-stream after recording the request,
// then holds the stream open until the client leaves when hold is set.
func sseRelay(t *testing.T, body string, hold bool) (*httptest.Server, chan *http.Request) {
	t.Helper()
	reqs := make(chan *http.Request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs <- r.Clone(context.Background())
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
		w.(http.Flusher).Flush()
		if hold {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

func collect(ctx context.Context, c *Client, lastID string, stopAfter int) ([]api.Event, error) {
	var got []api.Event
	err := c.Events(ctx, lastID, func(e api.Event) error {
		got = append(got, e)
		if len(got) == stopAfter {
			return errStop
		}
		return nil
	})
	return got, err
}

var errStop = errors.New("enough")

func TestEventsStream(t *testing.T) {
	const stream = ": postern events\n\n" +
		"id: 11\nevent: tunnel\ndata: {\"id\":\"11\",\"type\":\"tunnel\",\"connection_id\":\"c1\",\"from\":\"never_connected\",\"to\":\"connected\"}\n\n" +
		": keepalive\n\n" +
		"id: 12\r\nevent: future-kind\r\ndata: {}\r\n\r\n" +
		"id: 13\revent: auth\rdata: {\"id\":\"13\",\"type\":\"auth\",\"connection_id\":\"c1\",\"from\":\"active\",\"to\":\"failing\",\"reason\":\"AGENT_AUTH_FAILED\"}\r\r" +
		"id: 20\nevent: reset\ndata: {\"type\":\"reset\",\"time\":\"2026-01-02T03:04:05Z\"}\n\n"
	tests := map[string]struct {
		stream   string
		hold     bool
		stop     int
		wantIDs  []string
		wantErr  error
		isCtxErr bool
	}{
		"every kind, every line ending": {stream: stream, hold: true, stop: 3, wantIDs: []string{"11", "13", "20"}, wantErr: errStop},
		"overflow ends the call":        {stream: stream + "event: overflow\ndata: {\"type\":\"overflow\"}\n\n", wantIDs: []string{"11", "13", "20"}, wantErr: ErrOverflow},
		"the relay hangs up":            {stream: stream, wantIDs: []string{"11", "13", "20"}, wantErr: io.ErrUnexpectedEOF},
		"hang-up inside an event":       {stream: "id: 1\nevent: tunnel\ndata: {\"id\":\"1\"}", wantErr: io.ErrUnexpectedEOF},
		"an event too large":            {stream: "data: " + strings.Repeat("x", MaxEventSize) + "\n\n", hold: true, wantErr: ErrEventTooLarge},
		"the caller stops":              {stream: stream, hold: true, wantIDs: []string{"11", "13", "20"}, isCtxErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			srv, reqs := sseRelay(t, tt.stream, tt.hold)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			c := New(srv.URL, testKey, nil)
			var got []api.Event
			err := c.Events(ctx, "10", func(e api.Event) error {
				got = append(got, e)
				if len(got) == tt.stop {
					return errStop
				}
				if tt.isCtxErr && len(got) == 3 {
					cancel()
				}
				return nil
			})
			if tt.isCtxErr {
				assert.ErrorIs(t, err, context.Canceled)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			assert.Equal(t, tt.wantIDs, ids)
			r := <-reqs
			assert.Equal(t, "/v1/events", r.URL.Path)
			assert.Equal(t, "10", r.Header.Get("Last-Event-ID"))
			assert.Equal(t, "Bearer "+testKey, r.Header.Get("Authorization"))
			assert.Equal(t, "text/event-stream", r.Header.Get("Accept"))
			if len(got) == 3 {
				assert.Equal(t, "connected", got[0].To)
				assert.Equal(t, protocol.AgentAuthFailed, got[1].Reason)
				assert.Equal(t, api.EventReset, got[2].Type)
			}
		})
	}
}

func TestEventsOutlivesTheRequestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "id: 1\nevent: tunnel\ndata: {\"id\":\"1\",\"type\":\"tunnel\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := New(srv.URL, testKey, &http.Client{Timeout: 100 * time.Millisecond})
	got, err := collect(t.Context(), c, "", 1)
	assert.ErrorIs(t, err, errStop)
	assert.Len(t, got, 1)
}

func TestEventsRefusals(t *testing.T) {
	tests := map[string]struct {
		status      int
		contentType string
		body        string
		check       func(t *testing.T, err error)
	}{
		"api error": {status: 401, contentType: "application/json", body: `{"reason":"API_AUTH_REQUIRED","message":"no","request_id":"r1"}`,
			check: func(t *testing.T, err error) {
				var ae *api.Error
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, protocol.APIAuthRequired, ae.Reason)
			}},
		"not an event stream": {status: 200, contentType: "text/html", body: "<html>",
			check: func(t *testing.T, err error) {
				var ue *UnexpectedResponseError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, "text/html", ue.ContentType)
			}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			_, err := collect(t.Context(), New(srv.URL, testKey, nil), "", 0)
			tt.check(t, err)
		})
	}
}

// TestEventsAgainstRelay follows a real relay node while a connection is
// revoked, then resumes from the last id.
func TestEventsAgainstRelay(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "relay.db"))
	require.NoError(t, err)
	defer st.Close()
	cfg := relay.DefaultConfig()
	cfg.Store = st
	node, err := relay.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(node.Handler())
	defer srv.Close()
	defer node.Close()
	_, err = node.Bootstrap(t.Context(), dir)
	require.NoError(t, err)
	key, err := os.ReadFile(filepath.Join(dir, relay.AdminKeyFile))
	require.NoError(t, err)
	c := New(srv.URL, strings.TrimSpace(string(key)), nil)

	events := make(chan api.Event, 64)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- c.Events(ctx, "", func(e api.Event) error {
			events <- e
			return nil
		})
	}()
	// Revoke throwaway connections until one shows up: then the stream is
	// live.
	live := false
	for i := 0; !live && i < 100; i++ {
		warm, err := c.CreateConnection(t.Context(), "warm-up", "")
		require.NoError(t, err)
		_, err = c.RevokeConnection(t.Context(), warm.ID)
		require.NoError(t, err)
		select {
		case <-events:
			live = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	require.True(t, live, "no event reached the stream")

	conn, err := c.CreateConnection(t.Context(), "gitlab", "")
	require.NoError(t, err)
	_, err = c.RevokeConnection(t.Context(), conn.ID)
	require.NoError(t, err)
	var mine []api.Event
	for len(mine) < 2 {
		select {
		case e := <-events:
			if e.ConnectionID == conn.ID {
				mine = append(mine, e)
			}
		case <-time.After(5 * time.Second):
			require.FailNow(t, "no event of the revoked connection")
		}
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)

	first, second := mine[0], mine[1]
	assert.Equal(t, api.EventTunnel, first.Type)
	assert.Equal(t, "never_connected", first.From)
	assert.Equal(t, "revoked", first.To)
	assert.Equal(t, protocol.ConnectionRevoked, first.Reason)
	assert.Equal(t, api.EventAuth, second.Type)

	// Resuming after the first gets exactly the second.
	var got []api.Event
	err = c.ConnectionEvents(t.Context(), conn.ID, first.ID, func(e api.Event) error {
		got = append(got, e)
		return errStop
	})
	assert.ErrorIs(t, err, errStop)
	require.Len(t, got, 1)
	assert.Equal(t, second, got[0])
}

func FuzzSSEReader(f *testing.F) {
	f.Add("id: 1\nevent: tunnel\ndata: {}\n\n")
	f.Add(": comment\r\n\r\ndata:a\rdata:b\r\r")
	f.Add("data\n\nid\nevent\n\n")
	f.Add("id: \x00\ndata: x\n\n")
	f.Add("\r\n\r\n\n\r")
	f.Fuzz(func(t *testing.T, in string) {
		r := newSSEReader(strings.NewReader(in))
		for range len(in) + 1 {
			ev, err := r.next()
			if err != nil {
				return
			}
			require.NotEmpty(t, ev.event)
			require.LessOrEqual(t, len(ev.data), len(in))
			require.NotContains(t, ev.id, "\x00")
		}
		require.Fail(t, "more events than input bytes")
	})
}
