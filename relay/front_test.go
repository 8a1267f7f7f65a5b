package relay

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// ways are the two ways a CONNECT is served: read by the proxy's front,
// and, with a field the front leaves alone, by net/http. A client must not
// be able to tell them apart.
var ways = []struct{ name, more string }{
	{"front", ""},
	{"net/http", "Content-Length: 0\r\n"},
}

func TestConnectAnswersAlikeBothWays(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	h.firstTunnel(t, c, testHello("agent-1", 1), byHost(map[string]answerFunc{
		"gitlab.corp.example":  echo,
		"blocked.corp.example": refuse(protocol.TargetBlocked, 0),
	}))
	good := basicAuth(c.ID, h.adminKey)
	cases := map[string]struct{ target, authz string }{
		"accepted":           {"gitlab.corp.example:443", good},
		"no credentials":     {"gitlab.corp.example:443", ""},
		"wrong key":          {"gitlab.corp.example:443", basicAuth(c.ID, "pak_wrong")},
		"the API's scheme":   {"gitlab.corp.example:443", "Bearer " + h.adminKey},
		"unknown connection": {"gitlab.corp.example:443", basicAuth("conn_unknown", h.adminKey)},
		"user info":          {"user@gitlab.corp.example:443", good},
		"no port":            {"gitlab.corp.example", good},
		"refused by agent":   {"blocked.corp.example:443", good},
	}
	// seen is what a client sees of an answer, less what differs by
	// nature (request id, date).
	type seen struct {
		Status, Reason, Challenge, Connection string
		Body                                  api.Error
		Echo                                  string
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var got []seen
			for _, way := range ways {
				pc := h.sendHead(t, connectHead(tc.target, tc.authz, way.more))
				s := seen{Status: pc.resp.Status, Reason: pc.resp.Header.Get("Postern-Reason"),
					Challenge: pc.resp.Header.Get("Proxy-Authenticate"), Connection: pc.resp.Header.Get("Connection")}
				assert.Len(t, pc.resp.Header.Get("Postern-Request-Id"), 16, way.name)
				if pc.resp.StatusCode == http.StatusOK {
					_, err := io.WriteString(pc, "ping")
					require.NoError(t, err)
					back := make([]byte, 4)
					_, err = io.ReadFull(pc, back)
					require.NoError(t, err)
					s.Echo = string(back)
				} else {
					require.NoError(t, json.Unmarshal(pc.body, &s.Body), "%s: %s", way.name, pc.body)
					assert.Equal(t, pc.resp.Header.Get("Postern-Request-Id"), s.Body.RequestID, way.name)
					s.Body.RequestID = ""
				}
				_ = pc.Close()
				got = append(got, s)
			}
			assert.Equal(t, got[0], got[1], "the front answers as net/http does")
			assert.NotEmpty(t, got[0].Status)
		})
	}
	h.waitReleased(t, c.ID)
}

// A client that hangs up while the agent is still dialling ends the wait
// at once, rather than after the open timeout: the stream to the agent is
// closed and its slot freed.
func TestConnectClientHangsUpWhileAgentDials(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "", func(c *Config) { c.OpenTimeout = time.Minute })
	ended := make(chan struct{}, len(ways))
	silent := func(_ protocol.Request, st net.Conn) {
		_, _ = io.Copy(io.Discard, st) // never answers; returns when the relay closes the stream
		ended <- struct{}{}
	}
	h.firstTunnel(t, c, testHello("agent-1", 1), silent)
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			client, err := net.Dial("tcp", h.ep.proxyAddr)
			require.NoError(t, err)
			_, err = io.WriteString(client, connectHead("gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), way.more))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return h.activeStreams(c.ID) == 1 }, waitFor, pollEvery)

			start := time.Now()
			require.NoError(t, client.Close())
			select {
			case <-ended:
			case <-time.After(waitFor):
				t.Fatal("the agent's stream stayed open after the client hung up")
			}
			h.waitReleased(t, c.ID)
			assert.Less(t, time.Since(start), waitFor)
		})
	}
}

// Bytes a client sends after its CONNECT but before the answer (a TLS
// client that does not wait) reach the target whole and in order.
func TestConnectBytesSentBeforeTheAnswer(t *testing.T) {
	t.Parallel()
	h, c := newConnHarness(t, "")
	answer := make(chan struct{})
	slowEcho := func(req protocol.Request, st net.Conn) {
		<-answer
		echo(req, st)
	}
	h.firstTunnel(t, c, testHello("agent-1", 1), slowEcho)
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			client, err := net.Dial("tcp", h.ep.proxyAddr)
			require.NoError(t, err)
			defer client.Close()
			require.NoError(t, client.SetDeadline(time.Now().Add(waitFor)))
			_, err = io.WriteString(client, connectHead("gitlab.corp.example:443", basicAuth(c.ID, h.adminKey), way.more))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return h.activeStreams(c.ID) == 1 }, waitFor, pollEvery)
			hello := "\x16\x03\x01 a client hello sent without waiting"
			_, err = io.WriteString(client, hello)
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond) // let the relay see the bytes while it waits
			answer <- struct{}{}

			pc := &proxyConn{Conn: client, br: bufio.NewReader(client)}
			pc.resp, err = http.ReadResponse(pc.br, &http.Request{Method: http.MethodConnect})
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, pc.resp.StatusCode)
			back := make([]byte, len(hello))
			_, err = io.ReadFull(pc, back)
			require.NoError(t, err)
			assert.Equal(t, hello, string(back))
		})
	}
}

// A connection whose head does not arrive within the header timeout is
// closed without an answer, and the relay's stop does not wait for one
// still being read.
func TestConnectHeadTimeoutAndStop(t *testing.T) {
	t.Parallel()
	h, _ := newConnHarness(t, "", func(c *Config) { c.HeaderTimeout = 300 * time.Millisecond })
	for _, sent := range []string{"", "CONNECT gitlab.corp.ex"} {
		client, err := net.Dial("tcp", h.ep.proxyAddr)
		require.NoError(t, err)
		_, err = io.WriteString(client, sent)
		require.NoError(t, err)
		require.NoError(t, client.SetReadDeadline(time.Now().Add(waitFor)))
		start := time.Now()
		n, err := client.Read(make([]byte, 1))
		assert.Zero(t, n, "no answer to %q", sent)
		assert.ErrorIs(t, err, io.EOF, "closed after the header timeout, having sent %q", sent)
		assert.Less(t, time.Since(start), 3*time.Second)
		_ = client.Close()
	}

	h2, _ := newConnHarness(t, "") // the default header timeout, 10 s
	client, err := net.Dial("tcp", h2.ep.proxyAddr)
	require.NoError(t, err)
	defer client.Close()
	_, err = io.WriteString(client, "CONNECT gitlab.corp.ex")
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // the front is reading it
	start := time.Now()
	h2.srv.proxy.Close()
	assert.Less(t, time.Since(start), 2*time.Second, "the proxy's Close waited for a head")
	require.NoError(t, client.SetReadDeadline(time.Now().Add(waitFor)))
	_, err = client.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
}
