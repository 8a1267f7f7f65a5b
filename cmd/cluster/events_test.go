package cluster

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/webhook"
)

// hookReceiver records the event ids of the signed deliveries it gets.
type hookReceiver struct {
	mu  sync.Mutex
	ids []string
	bad int
}

func newHookReceiver(t *testing.T, secret []byte) (*hookReceiver, string) {
	h := &hookReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		h.mu.Lock()
		defer h.mu.Unlock()
		if webhook.Verify(secret, body, r.Header.Get(api.HeaderWebhookSignature), time.Now(), time.Minute) != nil {
			h.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.ids = append(h.ids, r.Header.Get(api.HeaderWebhookEventID))
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

func (h *hookReceiver) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// A webhook every node is configured with receives each event of a
// three-node run once: not once per node, none lost.
func TestWebhookDeliversEachEventOnce(t *testing.T) {
	secret := []byte("cluster-hook-secret-0123456789")
	hook, url := newHookReceiver(t, secret)
	c := clusterkit.NewWith(t, 3, func(_ int, nd *clusterkit.Node, _ string) {
		path := filepath.Join(nd.Dir, "hook.secret")
		require.NoError(t, os.WriteFile(path, secret, 0o600))
		nd.ExtraYAML = "webhooks:\n  - url: " + url + "\n    secret_file: " + path + "\n"
	})
	target := testkit.EchoServer(t)
	var agents []*testkit.Process
	var conns []api.Connection
	for i, name := range []string{"gitlab", "jira", "github"} {
		conn := c.CreateConnection(name)
		conns = append(conns, conn)
		agents = append(agents, c.StartAgent(conn.AgentToken, []string{target}, 1, i))
	}
	for i, conn := range conns {
		c.WaitTunnels(0, conn.ID, c.Nodes[i].ID)
	}
	for _, a := range agents {
		require.NoError(t, a.Stop(10*time.Second))
	}
	_, err := c.Client(1).RevokeConnection(t.Context(), conns[0].ID)
	require.NoError(t, err)

	// Every event the cluster published, read back from its history.
	var want []string
	testkit.WaitFor(t, 10*time.Second, "connected, configured, disconnected and revoked events of every connection", func() bool {
		want = eventIDs(c, 2)
		return len(want) >= 3*3+2
	})
	testkit.WaitFor(t, 15*time.Second, "every event delivered", func() bool {
		got := hook.received()
		return len(got) >= len(want)
	})
	time.Sleep(2 * deliverEveryForTest) // a second delivery of anything would land by now
	got := hook.received()
	slices.SortFunc(got, byNumber)
	t.Logf("%d events published, %d deliveries received", len(want), len(got))
	assert.Equal(t, want, got, "each event delivered exactly once")
	assert.Zero(t, hook.bad, "every delivery is signed")
}

// deliverEveryForTest is a few rounds of the nodes' delivery loop.
const deliverEveryForTest = 2 * time.Second

func byNumber(a, b string) int {
	x, _ := strconv.ParseInt(a, 10, 64)
	y, _ := strconv.ParseInt(b, 10, 64)
	return int(x - y)
}

// readEvents reads node i's event stream after lastID for a second.
func readEvents(c *clusterkit.Cluster, i int, lastID string) []api.Event {
	ctx, cancel := context.WithTimeout(c.T.Context(), time.Second)
	defer cancel()
	var evs []api.Event
	_ = c.Client(i).Events(ctx, lastID, func(e api.Event) error {
		evs = append(evs, e)
		return nil
	})
	return evs
}

// eventIDs reads the ids of every event kept from node i's stream.
func eventIDs(c *clusterkit.Cluster, i int) []string { return idsOf(readEvents(c, i, "0")) }

// A stream read on one node resumes on another with Last-Event-ID, with
// nothing missed and nothing twice.
func TestEventsResumeOnAnotherNode(t *testing.T) {
	c := clusterkit.New(t, 3)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	agent := c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	c.WaitTunnels(1, conn.ID, "node-a")
	first := eventIDs(c, 1)
	require.NotEmpty(t, first)
	last := first[len(first)-1]

	require.NoError(t, agent.Stop(10*time.Second))
	_, err := c.Client(0).RevokeConnection(t.Context(), conn.ID)
	require.NoError(t, err)
	var rest []api.Event
	testkit.WaitFor(t, 10*time.Second, "the events after "+last+" on node C", func() bool {
		rest = readEvents(c, 2, last)
		return len(rest) >= 2
	})
	var kinds []string
	for _, e := range rest {
		assert.Greater(t, byNumber(e.ID, last), 0, "only events after the resume point")
		kinds = append(kinds, e.Type+":"+e.To)
	}
	assert.Contains(t, kinds, "tunnel:disconnected")
	assert.Contains(t, kinds, "tunnel:revoked")
	all := eventIDs(c, 0)
	assert.Equal(t, all, append(first, idsOf(rest)...), "the two reads together are the whole history, in order")
}

func idsOf(evs []api.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}
