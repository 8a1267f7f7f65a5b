package cluster

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/clusterkit"
	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// The history is one table: every node reads the same transitions, each
// stored once by the node that published it, numbered as the events are.
func TestHistoryIsTheSameOnEveryNode(t *testing.T) {
	c := clusterkit.New(t, 2)
	target := testkit.EchoServer(t)
	conn := c.CreateConnection("gitlab")
	agent := c.StartAgent(conn.AgentToken, []string{target}, 1, 0)
	c.WaitTunnels(1, conn.ID, "node-a")
	// A tunnel that ends within milliseconds of its start may end before
	// any publication saw it up; the agent stops once one did.
	testkit.WaitFor(t, 10*time.Second, "connected published", func() bool {
		h, err := c.Client(0).History(t.Context(), conn.ID, time.Time{}, 0)
		return err == nil && len(h.Transitions) > 0 && h.Transitions[0].To == "connected"
	})
	require.NoError(t, agent.Stop(10*time.Second))

	var histories [2][]api.HistoryEntry
	for i := range c.Nodes {
		testkit.WaitFor(t, 10*time.Second, "both tunnel transitions in "+c.Nodes[i].ID+"'s history", func() bool {
			h, err := c.Client(i).History(t.Context(), conn.ID, time.Time{}, 0)
			if err != nil {
				return false
			}
			histories[i] = nil
			for _, e := range h.Transitions {
				if e.Type == api.EventTunnel {
					histories[i] = append(histories[i], e)
				}
			}
			return len(histories[i]) >= 2
		})
	}
	require.Len(t, histories[0], 2, "each transition once: %+v", histories[0])
	assert.Equal(t, "never_connected>connected", histories[0][0].From+">"+histories[0][0].To)
	assert.Equal(t, "connected>disconnected", histories[0][1].From+">"+histories[0][1].To)
	for _, e := range histories[0] {
		assert.Equal(t, "node-a", e.Node, "published by the node holding the tunnel")
	}
	assert.Equal(t, idsOf(entriesEvents(histories[0])), idsOf(entriesEvents(histories[1])), "both nodes read one table")
	assert.Subset(t, eventIDs(c, 1), idsOf(entriesEvents(histories[0])), "history ids are the event ids")
}

func entriesEvents(es []api.HistoryEntry) []api.Event {
	out := make([]api.Event, len(es))
	for i, e := range es {
		out[i] = e.Event
	}
	return out
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// pageClient keeps cookies and does not follow redirects.
func pageClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// page fetches a status page (a form when form is not nil) and returns its
// status and the CSRF token it carries.
func page(t *testing.T, hc *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if form == nil {
		resp, err = hc.Get(u)
	} else {
		resp, err = hc.PostForm(u, form)
	}
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	token := ""
	if m := csrfField.FindSubmatch(body); m != nil {
		token = string(m[1])
	}
	return resp.StatusCode, token
}

// A status page session signed in on one node is good on another (a load
// balancer may send the next request anywhere), and signing out on one
// ends it on every node.
func TestStatusPageSessionOnEveryNode(t *testing.T) {
	c := clusterkit.New(t, 2)
	a, b := "http://"+c.Nodes[0].API, "http://"+c.Nodes[1].API
	hc := pageClient(t)
	_, token := page(t, hc, a+"/ui/signin", nil)
	status, _ := page(t, hc, a+"/ui/signin", url.Values{"csrf": {token}, "key": {c.AdminKey}})
	require.Equal(t, http.StatusSeeOther, status)
	// The cookie is scoped to its host: carry it to the other node as a
	// load balancer's single name would.
	ua, _ := url.Parse(a + "/ui/")
	ub, _ := url.Parse(b + "/ui/")
	hc.Jar.SetCookies(ub, hc.Jar.Cookies(ua))
	status, csrf := page(t, hc, b+"/ui/", nil)
	require.Equal(t, http.StatusOK, status, "node B accepts node A's session")
	stolen := hc.Jar.Cookies(ub)

	status, _ = page(t, hc, b+"/ui/signout", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, status)
	replay := pageClient(t)
	replay.Jar.SetCookies(ua, stolen)
	testkit.WaitFor(t, 5*time.Second, "node A refuses the session signed out on B", func() bool {
		status, _ := page(t, replay, a+"/ui/", nil)
		return status == http.StatusSeeOther
	})
}
