package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/coalesce"
)

// maxRefusalBody bounds how much of a refusal body is read.
const maxRefusalBody = 16 << 10

// refusal is the relay's (or an intermediary's) answer other than 101 to
// the upgrade request.
type refusal struct {
	Status   int
	Reason   protocol.Reason
	Message  string
	Location string // for redirects
}

// parseRefusal reads a non-101 answer: the relay's JSON body
// {"reason","message",...} when there is one, and the Location of a
// redirect. Anything else yields an empty Reason: the answer did not come
// from a Postern relay.
func parseRefusal(status int, header http.Header, body []byte) refusal {
	r := refusal{Status: status}
	if header != nil {
		r.Location = header.Get("Location")
		if reason := header.Get("Postern-Reason"); reason != "" {
			r.Reason = protocol.Reason(reason)
		}
	}
	var b struct {
		Reason  protocol.Reason `json:"reason"`
		Message string          `json:"message"`
	}
	if len(body) > maxRefusalBody {
		body = body[:maxRefusalBody]
	}
	if err := json.Unmarshal(body, &b); err == nil {
		if b.Reason != "" {
			r.Reason = b.Reason
		}
		r.Message = b.Message
	}
	r.Reason = protocol.Reason(clean(string(r.Reason), 64))
	r.Message = clean(r.Message, 300)
	r.Location = clean(r.Location, 300)
	return r
}

// clean keeps text from the network printable and short.
func clean(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// refusalChecks turns a refused upgrade into the websocket and auth checks.
// A token refusal happens before the upgrade is attempted, so the websocket
// layer is then reported as not reached rather than failed.
func refusalChecks(rf refusal, tunnelURL string) (ws, auth Check) {
	notReached := Check{Status: Skip, Detail: "not reached: the relay checks the token before upgrading"}
	msg := string(rf.Reason)
	if rf.Message != "" {
		msg += ": " + rf.Message
	}
	answered := fmt.Sprintf("relay answered %d %s", rf.Status, msg)
	switch {
	case rf.Reason == protocol.AgentTokenInvalid:
		return notReached, fail(rf.Reason, answered,
			"token refused: rotate it with `postern-relay connections rotate-token <connection id>` and install the new token")
	case rf.Reason == protocol.AgentTokenRevoked:
		return notReached, fail(rf.Reason, "connection revoked: "+answered,
			"connection revoked: create a new connection with `postern-relay connections create` and install its token")
	case rf.Reason == protocol.RateLimited:
		// The relay limits an address after repeated refused credentials;
		// on an agent's machine that is almost always its own token.
		return notReached, fail(rf.Reason, answered,
			"the relay is rate-limiting this address after repeated refused credentials: most likely this agent's token is wrong or revoked; "+
				"stop the agent, check or rotate the token (`postern-relay connections rotate-token <connection id>`), wait for Retry-After and run doctor again")
	case rf.Status >= 300 && rf.Status < 400:
		where := ""
		if rf.Location != "" {
			where = " to " + rf.Location
		}
		return fail("", fmt.Sprintf("relay_url redirects (%d)%s; the agent never follows redirects", rf.Status, where),
			"relay_url redirects; point it at the relay itself"), Check{}
	case rf.Reason != "":
		return fail(rf.Reason, answered, reasonAdvice(rf.Reason)), Check{}
	case rf.Status == http.StatusUnauthorized || rf.Status == http.StatusProxyAuthRequired:
		return fail("", fmt.Sprintf("%d without a Postern reason: something in front of the relay asks for authentication", rf.Status),
			"let the agent's traffic to "+tunnelURL+" through without authentication, or point relay_url at the relay itself"), Check{}
	case rf.Status == http.StatusNotFound:
		return fail("", "404 at "+tunnelURL+": this is not a Postern relay",
			"relay_url must be the relay's base URL; the agent appends "+protocol.TunnelPath), Check{}
	}
	return fail("", fmt.Sprintf("answered %d without a Postern reason, so not from the relay", rf.Status),
		"a proxy or load balancer in front of the relay must forward WebSocket upgrades to "+protocol.TunnelPath), Check{}
}

func reasonAdvice(r protocol.Reason) string {
	switch r {
	case protocol.RelayUnavailable:
		return "the relay cannot reach its store; tell the relay's operator"
	case protocol.InvalidRequest:
		return "something between the agent and the relay strips the WebSocket subprotocol header; let it through"
	}
	return "see the relay's message; the relay's log has the details"
}

// checkTunnel upgrades the connection to the relay to a WebSocket at
// /v1/tunnel, as the agent does, then exchanges Hello and Welcome on a yamux
// control stream and closes everything.
func (rr *relayRun) checkTunnel(token string) {
	turl := tunnelURL(rr.u)
	var (
		ws   *websocket.Conn
		auth Check
	)
	c := rr.step(LayerWebSocket, rr.target, func(ctx context.Context) Check {
		conn, resp, err := rr.upgrade(ctx, turl, token)
		if err == nil {
			ws = conn
			if sp := conn.Subprotocol(); sp != protocol.Subprotocol {
				return fail(protocol.ProtocolError,
					fmt.Sprintf("upgraded, but the server chose subprotocol %q instead of %s", sp, protocol.Subprotocol),
					"relay_url reaches a WebSocket server that is not a Postern relay, or a proxy strips Sec-WebSocket-Protocol")
			}
			auth = Check{Status: Pass, Detail: "token accepted"}
			return pass("upgraded " + protocol.TunnelPath + ", subprotocol " + protocol.Subprotocol)
		}
		if resp == nil {
			return fail("", "upgrade "+turl+": "+err.Error(),
				"the relay did not answer the upgrade; check relay_url and whatever sits in front of the relay")
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(protocol.ProtocolError, "upgrade "+turl+": "+err.Error(),
				"relay_url reaches a WebSocket server that is not a Postern relay, or a proxy alters the handshake")
		}
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
		}
		wsc, authc := refusalChecks(parseRefusal(resp.StatusCode, resp.Header, body), turl)
		auth = authc
		return wsc
	})
	if ws != nil {
		defer ws.CloseNow()
	}
	switch {
	case auth.Status != StatusUnknown:
		auth.Layer, auth.Target = LayerRelayAuth, rr.target
		rr.add(auth)
		if auth.Status == Fail {
			rr.failed = LayerRelayAuth
		}
	case c.Status == Fail:
		rr.failed = LayerWebSocket
		rr.skip(LayerRelayAuth)
	}
	if rr.failed != "" {
		rr.skip(LayerRelaySession)
		return
	}
	rr.step(LayerRelaySession, rr.target, func(ctx context.Context) Check {
		return rr.hello(ctx, ws)
	})
}

// upgrade sends the WebSocket upgrade over the connection already opened
// (and checked) layer by layer, with the agent's headers. Redirects are
// never followed.
func (rr *relayRun) upgrade(ctx context.Context, turl, token string) (*websocket.Conn, *http.Response, error) {
	conn := rr.conn
	var used atomic.Bool
	give := func(context.Context, string, string) (net.Conn, error) {
		if used.Swap(true) {
			return nil, errors.New("the connection to the relay was already used")
		}
		return conn, nil
	}
	tr := &http.Transport{DialContext: give, DialTLSContext: give, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	hdr.Set("User-Agent", "postern-agent/"+rr.opts.Version+" (doctor)")
	ws, resp, err := websocket.Dial(ctx, turl, &websocket.DialOptions{
		HTTPClient:      client,
		HTTPHeader:      hdr,
		Subprotocols:    []string{protocol.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, resp, err
	}
	rr.conn = nil // the WebSocket owns it now
	return ws, resp, nil
}

// hello opens the control stream, sends Hello as "<agent_id>-doctor" and
// reads Welcome. The tunnel is closed right after: the doctor serves no
// streams.
func (rr *relayRun) hello(ctx context.Context, ws *websocket.Conn) Check {
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	ws.SetReadLimit(coalesce.MaxMessage)
	ycfg := yamux.DefaultConfig()
	ycfg.EnableKeepAlive = false
	ycfg.LogOutput = io.Discard
	ycfg.ConnectionWriteTimeout = rr.opts.StepTimeout
	ycfg.StreamCloseTimeout = rr.opts.StepTimeout
	mux, err := yamux.Client(coalesce.New(nc), ycfg)
	if err != nil {
		_ = nc.Close()
		return fail(protocol.ProtocolError, "yamux: "+err.Error(), "report this as a bug")
	}
	defer mux.Close()
	ctrl, err := mux.OpenStream()
	if err != nil {
		return fail(protocol.ProtocolError, "open control stream: "+err.Error(), "check the relay's log")
	}
	defer ctrl.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = ctrl.SetDeadline(dl)
	}
	if err := protocol.WriteFrame(ctrl, protocol.FrameHello, rr.helloFrame()); err != nil {
		return fail(protocol.ProtocolError, "send Hello: "+err.Error(), "check the relay's log")
	}
	f, err := protocol.ReadFrame(ctrl, protocol.MaxControlFrame)
	if err != nil {
		return fail(protocol.ProtocolError, "no Welcome: "+err.Error(),
			"the relay accepted the token but ended the handshake; its log says why (versions may differ)")
	}
	switch f.Type {
	case protocol.FrameWelcome:
		var w protocol.Welcome
		if err := f.Decode(protocol.FrameWelcome, &w); err != nil {
			return fail(protocol.ProtocolError, "bad Welcome: "+err.Error(), "the relay and agent versions may differ")
		}
		node := w.NodeID
		if node == "" {
			node = "(unnamed)"
		}
		return pass(fmt.Sprintf("Welcome from relay node %s (session %s, heartbeat %s) as agent %s",
			node, w.SessionID, w.HeartbeatInterval(), rr.doctorID()))
	case protocol.FrameRevoked:
		var rv protocol.Revoked
		_ = f.Decode(protocol.FrameRevoked, &rv)
		return fail(protocol.ConnectionRevoked, "relay says the connection was revoked: "+clean(rv.Message, 300),
			"connection revoked: create a new connection with `postern-relay connections create` and install its token")
	case protocol.FrameGoAway:
		return Check{Status: Warn, Detail: "relay answered GoAway instead of Welcome: it is draining",
			Remediation: "run doctor again in a minute; the agent reconnects to another node by itself"}
	}
	return fail(protocol.ProtocolError, "relay answered "+f.Type.String()+" instead of Welcome",
		"the relay and agent versions may differ")
}

func (rr *relayRun) doctorID() string {
	id := rr.cfg.AgentID
	if id == "" {
		id = "agent"
	}
	return id + "-doctor"
}

func (rr *relayRun) helloFrame() protocol.Hello {
	host, _ := rr.opts.Hostname()
	return protocol.Hello{
		ProtocolVersion: protocol.Version,
		AgentID:         rr.doctorID(),
		Hostname:        host,
		Version:         rr.opts.Version,
		Tunnels:         1,
		StartedAt:       time.Now().UTC(),
		Allowlist:       agent.NewPolicy(rr.cfg, time.Now()).Summary,
		Probe:           true,
	}
}

// tunnelURL is the relay base URL with /v1/tunnel appended.
func tunnelURL(base *url.URL) string {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + protocol.TunnelPath
	u.RawPath, u.RawQuery = "", ""
	return u.String()
}
