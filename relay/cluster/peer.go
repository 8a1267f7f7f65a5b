package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/broker"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
)

// Frames on a peer link, in the codec of package protocol. They travel only
// between relay nodes, on their own subprotocol, and never reach an agent.
const (
	frameForward protocol.FrameType = 64 // router to holder: a request for a connection's agent
	frameAnswer  protocol.FrameType = 65 // holder to router
)

// forward asks the holder to serve one request with a tunnel of the
// connection.
type forward struct {
	ConnectionID string           `json:"connection_id"`
	Request      protocol.Request `json:"request"`
	// LastResort lets the holder use tunnels already told to go away: the
	// router found no node with any other.
	LastResort bool `json:"last_resort,omitempty"`
}

// answer is the holder's reply. NotHere means it holds no tunnel of the
// connection that may take the request, and the router tries the next
// node; otherwise Result is the agent's, and after an ok dial the stream
// carries the data phase.
type answer struct {
	NotHere bool            `json:"not_here,omitempty"`
	Result  protocol.Result `json:"result"`
}

// peerHandshake bounds reading a forward frame on a new stream.
const peerHandshake = 10 * time.Second

// keyDigest is what the peer endpoint compares a presented key with.
func keyDigest(key []byte) [sha256.Size]byte { return sha256.Sum256(key) }

// PeerHandler serves the peer endpoint: another node presents the cluster
// key, upgrades to a peer link and sends forwarded requests on it.
func (n *Node) PeerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+tunnel.PeerPath, reply.WithRequestID(http.HandlerFunc(n.servePeer)))
	return mux
}

func (n *Node) servePeer(w http.ResponseWriter, r *http.Request) {
	presented, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	got, want := keyDigest([]byte(presented)), keyDigest(n.cfg.Key)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		n.log.Warn("peer link refused: wrong cluster key", "remote", r.RemoteAddr)
		reply.Error(w, r, protocol.Errorf(protocol.Forbidden, "cluster key required"))
		return
	}
	if !tunnel.OffersSubprotocol(r, tunnel.PeerSubprotocol) {
		reply.Error(w, r, protocol.Errorf(protocol.InvalidRequest, "WebSocket subprotocol %s required", tunnel.PeerSubprotocol))
		return
	}
	conn, err := tunnel.Upgrade(n.ctx, w, r, tunnel.PeerSubprotocol)
	if err != nil {
		return
	}
	sess, err := tunnel.Server(conn, n.peerConfig())
	if err != nil {
		_ = conn.Close()
		return
	}
	n.serveLink(sess, r.RemoteAddr)
}

// serveLink serves the streams of one incoming peer link until it ends.
func (n *Node) serveLink(sess *tunnel.Session, remote string) {
	n.wg.Add(1)
	defer n.wg.Done()
	defer sess.Close()
	stop := context.AfterFunc(n.ctx, func() { _ = sess.Close() })
	defer stop()
	n.log.Debug("peer link up", "remote", remote)
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := sess.Accept()
		if err != nil {
			return
		}
		streams.Go(func() { n.serveForward(st) })
	}
}

// serveForward serves one forwarded request from this node's tunnels.
func (n *Node) serveForward(st *tunnel.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(peerHandshake))
	f, err := protocol.ReadFrame(st, protocol.MaxStreamFrame)
	if err != nil {
		return
	}
	var fw forward
	if err := f.Decode(frameForward, &fw); err != nil {
		return
	}
	cands := n.broker().Candidates(fw.ConnectionID)
	if len(cands) == 0 && fw.LastResort {
		cands = n.broker().Draining(fw.ConnectionID)
	}
	if len(cands) == 0 || n.stopping.Load() {
		_ = protocol.WriteFrame(st, frameAnswer, answer{NotHere: true})
		return
	}
	timeout := time.Until(fw.Request.Deadline())
	if timeout <= 0 {
		timeout = time.Second
	}
	agent, res, err := n.broker().AskOn(n.ctx, cands, fw.Request, timeout)
	if err != nil {
		_ = protocol.WriteFrame(st, frameAnswer, answer{NotHere: errors.Is(err, broker.ErrNoTunnel), Result: refusal(err, res)})
		return
	}
	defer agent.Close()
	_ = st.SetDeadline(time.Now().Add(peerHandshake))
	if err := protocol.WriteFrame(st, frameAnswer, answer{Result: res}); err != nil || fw.Request.Op != protocol.OpDial {
		return
	}
	_ = st.SetDeadline(time.Time{})
	n.metrics.forwardedIn()
	stats, err := tunnel.Splice(st, agent, tunnel.SpliceOptions{WriteTimeout: tunnel.SpliceWriteTimeout, IdleTimeout: n.cfg.IdleTimeout})
	if errors.Is(err, tunnel.ErrWriteTimeout) {
		agent.Abort()
	}
	n.log.Debug("forwarded stream done", "connection", fw.ConnectionID, "request_id", fw.Request.ID,
		"up", stats.AToB, "down", stats.BToA, "err", err)
}

// refusal is the result frame that carries err to the router.
func refusal(err error, res protocol.Result) protocol.Result {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return protocol.Result{Reason: pe.Reason, Message: pe.Message, RetryAfterSeconds: pe.RetryAfter}
	}
	if res.Reason != "" {
		return res
	}
	return protocol.Result{Reason: protocol.AgentOffline, Message: err.Error()}
}

// peerConfig is the yamux config of peer links: long-lived, many streams.
func (n *Node) peerConfig() tunnel.Config {
	c := tunnel.DefaultConfig()
	c.AcceptBacklog = max(n.cfg.MaxStreams, tunnel.AcceptBacklog)
	c.Logger = n.log
	return c
}

// errNotHere and errPeerDown send the router on to the next node.
var (
	errNotHere  = errors.New("the node holds no tunnel of the connection")
	errPeerDown = errors.New("peer link down")
)

// Forward sends req for connection connID to node and returns the stream
// after an ok result. errNotHere or errPeerDown (both wrapped) mean the
// router should try the next node; a *protocol.Error is the agent's
// refusal.
//
// A node found unreachable (not one still in backoff from an earlier
// failure) also drops the connection's cached holders: during a rolling
// restart the list that named it may predate the tunnel its agent has
// since opened elsewhere, and the router reads it afresh. A node that
// stays down costs no store read per request.
func (n *Node) Forward(ctx context.Context, node, connID string, req protocol.Request, timeout time.Duration, lastResort bool) (ps *PeerStream, res protocol.Result, err error) {
	defer func() {
		if errors.Is(err, errPeerDown) && !errors.Is(err, errBackoff) {
			n.holders.forget(connID)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sess, err := n.links.get(ctx, node)
	if err != nil {
		return nil, protocol.Result{}, fmt.Errorf("%w: %s: %w", errPeerDown, node, err)
	}
	st, err := sess.Open(ctx)
	if err != nil {
		n.links.failed(node, sess)
		return nil, protocol.Result{}, fmt.Errorf("%w: %s: %v", errPeerDown, node, err)
	}
	deadline, _ := ctx.Deadline()
	req.DeadlineUnixMS = deadline.UnixMilli()
	ans, err := exchange(ctx, st, forward{ConnectionID: connID, Request: req, LastResort: lastResort})
	switch {
	case err != nil:
		_ = st.Close()
		return nil, protocol.Result{}, err
	case ans.NotHere:
		_ = st.Close()
		n.holders.forget(connID)
		return nil, ans.Result, fmt.Errorf("%w: %s", errNotHere, node)
	case !ans.Result.OK:
		_ = st.Close()
		e := protocol.Errorf(reasonOf(ans.Result), "%s", ans.Result.Message)
		e.RetryAfter = ans.Result.RetryAfterSeconds
		return nil, ans.Result, e
	}
	n.metrics.forwardedOut()
	return &PeerStream{Stream: st}, ans.Result, nil
}

func reasonOf(res protocol.Result) protocol.Reason {
	if res.Reason == protocol.ReasonUnknown {
		return protocol.ProtocolError
	}
	return res.Reason
}

// exchange writes the forward frame and reads the answer within ctx.
func exchange(ctx context.Context, st *tunnel.Stream, fw forward) (answer, error) {
	deadline, _ := ctx.Deadline()
	_ = st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, frameForward, fw); err != nil {
		return answer{}, fmt.Errorf("%w: send: %v", errPeerDown, err)
	}
	f, err := protocol.ReadFrame(st, protocol.MaxStreamFrame)
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, protocol.Errorf(protocol.ConnectTimeout, "the node holding the tunnel did not answer in time")
		}
		return answer{}, fmt.Errorf("%w: read: %v", errPeerDown, err)
	}
	var ans answer
	if err := f.Decode(frameAnswer, &ans); err != nil {
		return answer{}, protocol.Errorf(protocol.ProtocolError, "peer answer: %v", err)
	}
	_ = st.SetDeadline(time.Time{})
	return ans, nil
}

// PeerStream is a forwarded stream after an ok result: the data phase runs
// through the peer link to the node that holds the agent's tunnel.
type PeerStream struct {
	*tunnel.Stream
}

// Abort ends the peer link the stream runs on: its writes stopped making
// progress, so every stream on it is stuck.
func (s *PeerStream) Abort() { _ = s.Session().Close() }

// Remote is the node as the router's way to the other nodes' tunnels.
func (n *Node) Remote() router.Remote { return remote{n} }

type remote struct{ n *Node }

func (r remote) Holders(ctx context.Context, connID string) ([]string, []string, error) {
	return r.n.Holders(ctx, connID)
}

func (r remote) Forward(ctx context.Context, node, connID string, req protocol.Request, timeout time.Duration, lastResort bool) (router.Stream, protocol.Result, error) {
	st, res, err := r.n.Forward(ctx, node, connID, req, timeout, lastResort)
	if err != nil {
		return nil, res, err
	}
	return st, res, nil
}

func (r remote) Skip(err error) bool {
	return errors.Is(err, errNotHere) || errors.Is(err, errPeerDown)
}

func (r remote) Unreachable(err error) bool { return errors.Is(err, errPeerDown) }
