package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/secret"
	"github.com/postern/postern/relay/store"
)

// Agent token prefix (see relay/secret).
const agentTokenPrefix = "pat"

// Hello field bounds.
const (
	maxAgentIDLen  = 128
	maxHostnameLen = 255
	maxVersionLen  = 64
)

// authErr is a refused agent token with the answer to give.
type authErr struct {
	reason protocol.Reason
	msg    string
}

func (e *authErr) Error() string { return string(e.reason) + ": " + e.msg }

// authenticateAgent checks an Authorization header against the store and
// returns the token's connection. Unknown and wrong tokens get the same
// answer; a wrong secret for a known token id is recorded against its
// connection so status can say AGENT_AUTH_FAILED.
func (s *Server) authenticateAgent(ctx context.Context, header string) (store.Connection, string, error) {
	invalid := &authErr{protocol.AgentTokenInvalid, "agent token is unknown, wrong or expired"}
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return store.Connection{}, "", invalid
	}
	id, sec, err := secret.Parse(agentTokenPrefix, strings.TrimSpace(raw))
	if err != nil {
		return store.Connection{}, "", invalid
	}
	tok, err := s.store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		s.cfg.verifySecret(dummyHash, sec) // same work as a known id
		return store.Connection{}, "", invalid
	}
	if err != nil {
		return store.Connection{}, "", fmt.Errorf("look up agent token: %w", err)
	}
	now := time.Now()
	if !s.cfg.verifySecret(tok.Hash, sec) {
		s.noteAuthFailure(ctx, tok.ConnectionID, "agent presented a wrong secret for token "+tok.ID, now)
		return store.Connection{}, "", invalid
	}
	if tok.ExpiresAt != nil && !now.Before(*tok.ExpiresAt) {
		s.noteAuthFailure(ctx, tok.ConnectionID, "agent presented token "+tok.ID+", which expired after a rotation", now)
		return store.Connection{}, "", invalid
	}
	conn, err := s.store.GetConnection(ctx, tok.ConnectionID)
	if err != nil {
		return store.Connection{}, "", fmt.Errorf("look up connection of agent token: %w", err)
	}
	if conn.RevokedAt != nil {
		return store.Connection{}, "", &authErr{protocol.AgentTokenRevoked, "the connection of this agent token was revoked"}
	}
	return conn, tok.ID, nil
}

// dummyHash is compared against when a token id is unknown, so that an
// unknown id costs the same time as a wrong secret.
var dummyHash = secret.Hash(make([]byte, 32))

func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandshakeTimeout)
	defer cancel()
	header := r.Header.Get("Authorization")
	cred := parseCredential(agentTokenPrefix, strings.TrimPrefix(header, "Bearer "))
	if e := s.auth.admit(r.RemoteAddr, cred); e != nil {
		writeError(w, r, *e)
		return
	}
	conn, tokenID, err := s.authenticateAgent(ctx, header)
	if err != nil {
		var ae *authErr
		if errors.As(err, &ae) {
			if header != "" {
				s.auth.failed(r.RemoteAddr, cred)
			}
			s.log.Info("agent tunnel refused", "remote", r.RemoteAddr, "reason", ae.reason)
			writeError(w, r, apiError{reason: ae.reason, msg: ae.msg})
			return
		}
		s.log.Error("agent tunnel: store error", "err", err)
		writeError(w, r, apiError{reason: protocol.RelayUnavailable, msg: "relay store unavailable"})
		return
	}
	s.auth.succeeded(cred)
	s.watchConnection(conn) // the "from" of this tunnel's status events
	if !tunnel.OffersSubprotocol(r) {
		writeError(w, r, apiError{reason: protocol.InvalidRequest, msg: "WebSocket subprotocol " + protocol.Subprotocol + " required"})
		return
	}
	// The session lives until the agent leaves or the node closes; the
	// request context ends when the handler returns, so use the node's.
	wire, err := tunnel.Upgrade(s.ctx, w, r)
	if err != nil {
		s.log.Info("agent tunnel upgrade", "remote", r.RemoteAddr, "err", err)
		return
	}
	s.tunnels.Add(1)
	defer s.tunnels.Done()
	mux, err := tunnel.Server(wire, s.tunnelConfig())
	if err != nil {
		_ = wire.Close()
		return
	}
	defer mux.Close()
	sess, err := s.handshake(mux, conn.ID, tokenID, r.RemoteAddr)
	if err != nil {
		s.log.Info("agent handshake", "connection", conn.ID, "remote", r.RemoteAddr, "err", err)
		return
	}
	if sess.hello.Probe {
		// A diagnostic handshake: Welcome proved the path and the token;
		// it is no tunnel and changes no status.
		s.log.Info("agent probe answered", "connection", conn.ID, "agent", sess.hello.AgentID, "remote", r.RemoteAddr)
		return
	}
	s.runSession(sess)
}

// handshake accepts the control stream, reads Hello and answers Welcome.
func (s *Server) handshake(mux *tunnel.Session, connID, tokenID, remote string) (*session, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	sess := &session{
		id:           randomHex(8),
		connectionID: connID,
		tokenID:      tokenID,
		remote:       remote,
		connectedAt:  time.Now(),
		mux:          mux,
	}
	hello, err := mux.AcceptHello(ctx, func(h protocol.Hello) (protocol.Welcome, error) {
		if err := validateHello(h); err != nil {
			return protocol.Welcome{}, err
		}
		return protocol.Welcome{NodeID: s.cfg.NodeID, HeartbeatMS: s.cfg.HeartbeatInterval.Milliseconds(), SessionID: sess.id}, nil
	})
	if err != nil {
		return nil, err
	}
	sess.hello = hello
	return sess, nil
}

func validateHello(h protocol.Hello) error {
	switch {
	case h.AgentID == "" || len(h.AgentID) > maxAgentIDLen:
		return fmt.Errorf("%w: hello agent_id empty or longer than %d", protocol.ErrBadRequest, maxAgentIDLen)
	case len(h.Hostname) > maxHostnameLen:
		return fmt.Errorf("%w: hello hostname longer than %d", protocol.ErrBadRequest, maxHostnameLen)
	case len(h.Version) > maxVersionLen:
		return fmt.Errorf("%w: hello version longer than %d", protocol.ErrBadRequest, maxVersionLen)
	}
	return nil
}

// runSession registers the session and reads its control stream until the
// tunnel ends. yamux keepalives notice a dead peer; a Health that is late
// only marks the tunnel degraded (health frames queue behind bulk data on
// a slow link), and one overdue by ten intervals ends the session, since
// an agent whose control loop hangs is not trusted with streams.
func (s *Server) runSession(sess *session) {
	for _, old := range s.reg.add(sess) {
		s.log.Info("closing an older tunnel of the same agent: the newest sessions win",
			"connection", old.connectionID, "agent", old.hello.AgentID, "session", old.id, "replaced_by", sess.id)
		_ = old.mux.Close()
	}
	defer func() {
		s.reg.remove(sess)
		s.statusChanged(sess.connectionID)
	}()
	log := s.log.With("connection", sess.connectionID, "agent", sess.hello.AgentID, "session", sess.id)
	// A revocation stored after authentication but handled before add
	// did not see this session; look again now that it is registered.
	if c, err := s.store.GetConnection(s.ctx, sess.connectionID); err == nil && c.RevokedAt != nil {
		_ = sess.notify(protocol.FrameRevoked, protocol.Revoked{Message: "connection revoked"})
		log.Info("agent tunnel closed: connection revoked during handshake")
		return
	}
	now := time.Now()
	if err := s.store.MarkConnected(s.ctx, sess.connectionID, now); err != nil {
		log.Warn("record agent connected", "err", err)
	}
	log.Info("agent tunnel up", "remote", sess.remote, "version", sess.hello.Version)
	s.statusChanged(sess.connectionID)

	// Streams opened by the agent after the control stream are not part
	// of the protocol; refuse them so they cannot pile up.
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			st, err := sess.mux.Accept()
			if err != nil {
				return
			}
			_ = st.Close()
		}
	}()

	lastStored := now
	var err error
	for {
		var f protocol.Frame
		f, err = sess.mux.Recv(10 * s.cfg.HeartbeatInterval)
		if err != nil {
			break
		}
		if f.Type != protocol.FrameHealth {
			continue // unknown control frames are ignored
		}
		var h protocol.Health
		if err = f.Decode(protocol.FrameHealth, &h); err != nil {
			break
		}
		at := time.Now()
		prev := sess.allowlist()
		sess.recordHealth(h, at)
		s.healthReported(sess.connectionID, prev.Status+" "+prev.SHA256, h.Allowlist.Status+" "+h.Allowlist.SHA256)
		if at.Sub(lastStored) >= time.Minute {
			if err := s.store.MarkSeen(s.ctx, sess.connectionID, at); err == nil {
				lastStored = at
			}
		}
	}
	_ = sess.mux.Close()
	<-acceptDone
	if err := s.store.MarkSeen(context.Background(), sess.connectionID, time.Now()); err != nil {
		log.Warn("record agent last seen", "err", err)
	}
	log.Info("agent tunnel down", "err", err)
}
