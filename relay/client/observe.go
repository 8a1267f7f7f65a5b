package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/postern/postern/relay/api"
)

// History returns a connection's newest transitions, oldest first, with
// how long each state lasted and the connection's uptime. A zero since
// reads from the oldest kept; a zero limit takes the relay's default
// (100; at most 1,000).
func (c *Client) History(ctx context.Context, id string, since time.Time, limit int) (api.History, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.History
	err := c.do(ctx, http.MethodGet, "/v1/connections/"+url.PathEscape(id)+"/history", q, nil, &out)
	return out, err
}

// Diag returns one part of the answering node's support bundle, as the
// node sends it (an admin key's call): "info" (JSON), "logs" and "audit"
// (text lines), "goroutine" (text) or "heap" (pprof).
func (c *Client) Diag(ctx context.Context, part string) ([]byte, error) {
	data, _, err := c.send(ctx, http.MethodGet, "/v1/diag/"+url.PathEscape(part), nil, nil)
	return data, err
}
