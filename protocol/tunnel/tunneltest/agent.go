package tunneltest

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// AnswerFunc plays the agent's side of one relay-opened stream after its
// request frame was read. The stream is closed when it returns.
type AnswerFunc func(req protocol.Request, st net.Conn)

// AgentOptions shape an Agent.
type AgentOptions struct {
	// Token is sent as the agent token.
	Token string
	// Hello is the agent's first frame.
	Hello protocol.Hello
	// Answer serves every stream the relay opens.
	Answer AnswerFunc
	// HTTPClient sends the tunnel request; a plain client when nil.
	HTTPClient *http.Client
}

// Agent is the agent end of one tunnel, built from the same transport as
// the real agent; it records what the relay sends.
type Agent struct {
	Hello   protocol.Hello
	Welcome protocol.Welcome
	Session *tunnel.Session

	requests chan protocol.Request // every request frame received
	control  chan protocol.Frame   // control frames; closed when the tunnel ends

	wg   sync.WaitGroup
	once sync.Once
}

// DialAgent opens a tunnel to the relay at relayURL and completes the
// handshake. Its error is the relay's refusal (*tunnel.UpgradeError) or
// whatever ended the handshake. The agent is closed with the test.
func DialAgent(t testing.TB, relayURL string, opts AgentOptions) (*Agent, error) {
	t.Helper()
	base, err := url.Parse(relayURL)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), WaitTimeout)
	defer cancel()
	cfg := tunnel.DefaultConfig()
	cfg.KeepAlive = false
	sess, err := tunnel.Dial(ctx, base, tunnel.DialOptions{HTTPClient: opts.HTTPClient, Token: opts.Token, Config: cfg})
	if err != nil {
		return nil, err
	}
	a := &Agent{
		Hello:    opts.Hello,
		Session:  sess,
		requests: make(chan protocol.Request, 64),
		control:  make(chan protocol.Frame, 16),
	}
	t.Cleanup(a.Close)
	// From here on the relay may hang up at any step (a bad Hello).
	if a.Welcome, err = sess.Hello(ctx, opts.Hello); err != nil {
		_ = sess.Close()
		return nil, err
	}
	a.wg.Add(2)
	go a.readControl()
	go a.acceptStreams(opts.Answer)
	return a, nil
}

func (a *Agent) readControl() {
	defer a.wg.Done()
	defer close(a.control)
	for {
		f, err := a.Session.Recv(0)
		if err != nil {
			return
		}
		select {
		case a.control <- f:
		default:
		}
	}
}

func (a *Agent) acceptStreams(answer AnswerFunc) {
	defer a.wg.Done()
	for {
		st, err := a.Session.Accept()
		if err != nil {
			return
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer st.Close()
			_ = st.SetReadDeadline(time.Now().Add(WaitTimeout))
			req, err := protocol.ReadRequest(st)
			if err != nil {
				return
			}
			_ = st.SetReadDeadline(time.Time{})
			select {
			case a.requests <- req:
			default:
			}
			answer(req, st)
		}()
	}
}

// Control delivers the relay's control frames; it is closed when the
// tunnel ends.
func (a *Agent) Control() <-chan protocol.Frame { return a.control }

// SendHealth reports health on the control stream.
func (a *Agent) SendHealth(t testing.TB, h protocol.Health) {
	t.Helper()
	require.NoError(t, a.Session.Send(protocol.FrameHealth, h, WaitTimeout))
}

// NextRequest returns the next request frame the agent received.
func (a *Agent) NextRequest(t testing.TB) protocol.Request {
	t.Helper()
	select {
	case r := <-a.requests:
		return r
	case <-time.After(WaitTimeout):
		require.FailNow(t, "agent received no request")
		return protocol.Request{}
	}
}

// Close ends the tunnel and waits for every goroutine of the agent.
func (a *Agent) Close() {
	a.once.Do(func() { _ = a.Session.Close() })
	a.wg.Wait()
}

// Requests delivers the request frames the agent received, in order.
func (a *Agent) Requests() <-chan protocol.Request { return a.requests }
