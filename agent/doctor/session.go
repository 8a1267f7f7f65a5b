package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// refusal is the relay's (or an intermediary's) answer other than 101 to
// the upgrade request, cleaned for printing.
type refusal struct {
	Status   int
	Reason   protocol.Reason
	Message  string
	Location string // for redirects
}

// refusalOf reads what the doctor shows of a refused upgrade. An empty
// Reason means the answer did not come from a Postern relay.
func refusalOf(e *tunnel.UpgradeError) refusal {
	r := refusal{Status: e.StatusCode, Location: clean(e.Location, 300)}
	if e.Refusal != nil {
		r.Reason = protocol.Reason(clean(string(e.Refusal.Reason), 64))
		r.Message = clean(e.Refusal.Message, 300)
	}
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
	turl := tunnel.URL(rr.u)
	var (
		sess *tunnel.Session
		auth Check
	)
	c := rr.step(LayerWebSocket, rr.target, func(ctx context.Context) Check {
		s, err := rr.upgrade(ctx, token)
		if err == nil {
			sess = s
			auth = Check{Status: Pass, Detail: "token accepted"}
			return pass("upgraded " + protocol.TunnelPath + ", subprotocol " + protocol.Subprotocol)
		}
		ws, a := upgradeChecks(err, turl)
		auth = a
		return ws
	})
	if sess != nil {
		defer sess.Close()
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
		return rr.hello(ctx, sess)
	})
}

// upgradeChecks turns a failed upgrade into the websocket check and, when
// the relay judged the token, the auth check.
func upgradeChecks(err error, turl string) (ws, auth Check) {
	var (
		ue *tunnel.UpgradeError
		se *tunnel.SubprotocolError
	)
	switch {
	case errors.As(err, &se):
		return fail(protocol.ProtocolError, se.Error(),
			"relay_url reaches a WebSocket server that is not a Postern relay, or a proxy strips Sec-WebSocket-Protocol"), Check{}
	case errors.Is(err, tunnel.ErrBadUpgrade):
		return fail(protocol.ProtocolError, "upgrade "+turl+": "+err.Error(),
			"relay_url reaches a WebSocket server that is not a Postern relay, or a proxy alters the handshake"), Check{}
	case errors.As(err, &ue):
		return refusalChecks(refusalOf(ue), turl)
	}
	return fail("", "upgrade "+turl+": "+err.Error(),
		"the relay did not answer the upgrade; check relay_url and whatever sits in front of the relay"), Check{}
}

// upgrade sends the WebSocket upgrade over the connection already opened
// (and checked) layer by layer, with the agent's headers. Redirects are
// never followed. The session has no keepalive: it ends after Welcome.
func (rr *relayRun) upgrade(ctx context.Context, token string) (*tunnel.Session, error) {
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
	cfg := tunnel.DefaultConfig()
	cfg.KeepAlive = false
	cfg.WriteTimeout = rr.opts.StepTimeout
	sess, err := tunnel.Dial(ctx, rr.u, tunnel.DialOptions{
		HTTPClient: client,
		Token:      token,
		UserAgent:  "postern-agent/" + rr.opts.Version + " (doctor)",
		Config:     cfg,
	})
	if err != nil {
		return nil, err
	}
	rr.conn = nil // the tunnel owns it now
	return sess, nil
}

// hello sends Hello as "<agent_id>-doctor" and reads Welcome. The tunnel is
// closed right after: the doctor serves no streams.
func (rr *relayRun) hello(ctx context.Context, sess *tunnel.Session) Check {
	w, err := sess.Hello(ctx, rr.helloFrame())
	var notice *tunnel.NoticeError
	switch {
	case errors.As(err, &notice) && notice.Type == protocol.FrameRevoked:
		return fail(protocol.ConnectionRevoked, "relay says the connection was revoked: "+clean(notice.Message, 300),
			"connection revoked: create a new connection with `postern-relay connections create` and install its token")
	case errors.As(err, &notice) && notice.Type == protocol.FrameGoAway:
		return Check{Status: Warn, Detail: "relay answered GoAway instead of Welcome: it is draining",
			Remediation: "run doctor again in a minute; the agent reconnects to another node by itself"}
	case errors.As(err, &notice):
		return fail(protocol.ProtocolError, "relay answered "+notice.Type.String()+" instead of Welcome",
			"the relay and agent versions may differ")
	case errors.Is(err, tunnel.ErrBadWelcome):
		return fail(protocol.ProtocolError, err.Error(), "the relay and agent versions may differ")
	case err != nil:
		return fail(protocol.ProtocolError, "no Welcome: "+err.Error(),
			"the relay accepted the token but ended the handshake; its log says why (versions may differ)")
	}
	node := w.NodeID
	if node == "" {
		node = "(unnamed)"
	}
	return pass(fmt.Sprintf("Welcome from relay node %s (session %s, heartbeat %s) as agent %s",
		node, w.SessionID, w.HeartbeatInterval(), rr.doctorID()))
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
		Allowlist:       policy.New(rr.cfg, time.Now()).Summary,
		Probe:           true,
	}
}
