package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/store"
)

// ProxyHandler serves the CONNECT proxy: `CONNECT host:port` (and plain
// http:// absolute-form requests) with Proxy-Authorization naming the
// connection and an API key.
func (s *Server) ProxyHandler() http.Handler {
	return s.metrics.countRefusals(withRequestID(http.HandlerFunc(s.serveProxy)))
}

func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	header := r.Header.Get("Proxy-Authorization")
	cred := proxyCredential(header)
	if e := s.auth.admit(r.RemoteAddr, cred); e != nil {
		writeError(w, r, *e)
		return
	}
	conn, keyID, aerr := s.authorizeProxy(r.Context(), header)
	switch {
	case keyID != "":
		// The key is good even if the connection is not its to use:
		// connection ids are not secrets, so that is no guessing.
		s.auth.succeeded(cred)
	case aerr != nil && aerr.reason == protocol.ProxyAuthRequired && header != "":
		s.auth.failed(r.RemoteAddr, cred)
	}
	if aerr != nil {
		writeError(w, r, *aerr)
		return
	}
	if e := s.admitProxyRequest(keyID); e != nil {
		writeError(w, r, *e)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		s.handleConnect(w, r, conn)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		s.forwardHTTP(w, r, conn)
	default:
		writeError(w, r, apiError{reason: protocol.InvalidRequest, msg: "use CONNECT host:port or an absolute http:// URL"})
	}
}

// authorizeProxy checks Basic base64(<connection id>:<api key>) and
// returns the connection and the id of the key, which is set whenever the
// key itself is valid. A key of another workspace gets exactly the answer
// of an unknown connection.
func (s *Server) authorizeProxy(ctx context.Context, header string) (store.Connection, string, *apiError) {
	denied := &apiError{reason: protocol.ProxyAuthRequired, msg: "Proxy-Authorization must be Basic base64(<connection id>:<api key>) with a key valid for that connection"}
	raw, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return store.Connection{}, "", denied
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return store.Connection{}, "", denied
	}
	connID, key, ok := strings.Cut(string(dec), ":")
	if !ok || connID == "" {
		return store.Connection{}, "", denied
	}
	k, err := s.authenticateKey(ctx, key)
	if err != nil {
		if errors.Is(err, errKeyInvalid) {
			return store.Connection{}, "", denied
		}
		return store.Connection{}, "", &apiError{reason: protocol.RelayUnavailable, msg: "relay store unavailable"}
	}
	conn, err := s.store.GetConnection(ctx, connID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !k.Admin && k.Workspace != conn.Workspace) {
		return store.Connection{}, k.ID, denied
	}
	if err != nil {
		return store.Connection{}, k.ID, &apiError{reason: protocol.RelayUnavailable, msg: "relay store unavailable"}
	}
	return conn, k.ID, nil
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request, conn store.Connection) {
	host, port, aerr := splitTarget(r.Host)
	if aerr != nil {
		writeError(w, r, *aerr)
		return
	}
	stream, aerr := s.dialAgent(r.Context(), conn, host, port, requestID(r))
	if aerr != nil {
		writeError(w, r, *aerr)
		return
	}
	rc := http.NewResponseController(w)
	client, brw, err := rc.Hijack()
	if err != nil {
		_ = stream.Close()
		writeError(w, r, apiError{reason: protocol.InternalError, msg: "connection cannot be hijacked"})
		return
	}
	_ = client.SetDeadline(time.Time{})
	resp := "HTTP/1.1 200 Connection established\r\nPostern-Request-Id: " + requestID(r) + "\r\n\r\n"
	if _, err := client.Write([]byte(resp)); err != nil {
		_ = client.Close()
		_ = stream.Close()
		return
	}
	// Bytes the client sent right behind its CONNECT are already buffered.
	early := brw.Reader.Buffered()
	if early > 0 {
		pending, _ := brw.Reader.Peek(early)
		if _, err := stream.Write(pending); err != nil {
			_ = client.Close()
			_ = stream.Close()
			return
		}
	}
	st, err := tunnel.Splice(client, stream, tunnel.SpliceOptions{
		WriteTimeout: tunnel.SpliceWriteTimeout,
		IdleTimeout:  s.cfg.IdleTimeout,
	})
	s.metrics.streams.Inc()
	st.AToB += int64(early)
	s.metrics.bytes.WithLabelValues("to_target").Add(float64(st.AToB))
	s.metrics.bytes.WithLabelValues("from_target").Add(float64(st.BToA))
	if errors.Is(err, tunnel.ErrWriteTimeout) {
		// The tunnel no longer drains: end it so the agent reconnects,
		// rather than leave other streams' readers hung on it.
		s.log.Warn("tunnel write timed out; closing the tunnel", "connection", conn.ID, "err", err)
		_ = stream.Session().Close()
	}
	s.log.Debug("proxy stream done", "connection", conn.ID, "request_id", requestID(r),
		"target", net.JoinHostPort(host, strconv.Itoa(port)), "up", st.AToB, "down", st.BToA, "err", err)
}

// forwardHTTP carries a plain http:// proxy request through the tunnel.
func (s *Server) forwardHTTP(w http.ResponseWriter, r *http.Request, conn store.Connection) {
	reqID := requestID(r)
	transport := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, aerr := splitTarget(addr)
			if aerr != nil {
				return nil, aerr
			}
			st, aerr := s.dialAgent(ctx, conn, host, port, reqID)
			if aerr != nil {
				return nil, aerr
			}
			return st, nil
		},
		ResponseHeaderTimeout: s.cfg.IdleTimeout,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Header.Del("Proxy-Authorization")
			pr.Out.Header.Del("Proxy-Connection")
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var ae *apiError
			if errors.As(err, &ae) {
				writeError(w, r, *ae)
				return
			}
			writeError(w, r, apiError{reason: protocol.ConnectRefused, msg: "forward request: " + err.Error()})
		},
	}
	rp.ServeHTTP(w, r)
	transport.CloseIdleConnections()
}

// splitTarget splits host:port; the agent judges the host itself.
func splitTarget(hostport string) (string, int, *apiError) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return "", 0, &apiError{reason: protocol.BadTarget, msg: fmt.Sprintf("target %q is not host:port", hostport)}
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != p {
		return "", 0, &apiError{reason: protocol.BadTarget, msg: fmt.Sprintf("target port %q is not 1-65535", p)}
	}
	if len(host) > protocol.MaxHostLen {
		return "", 0, &apiError{reason: protocol.BadTarget, msg: "target host is too long"}
	}
	return host, port, nil
}

// agentStream is a stream to the agent after an ok result; Close releases
// its slot in the session's active count. Its CloseWrite half-closes.
type agentStream struct {
	*tunnel.Stream
	release func()
}

func (a *agentStream) Close() error {
	err := a.Stream.Close()
	a.release()
	return err
}

// dialAgent asks one of the connection's agents to dial host:port and
// returns the stream, ready for the data phase.
func (s *Server) dialAgent(ctx context.Context, conn store.Connection, host string, port int, reqID string) (*agentStream, *apiError) {
	st, _, aerr := s.askAgent(ctx, conn, protocol.Request{Op: protocol.OpDial, ID: reqID, Host: host, Port: port}, s.cfg.OpenTimeout)
	return st, aerr
}

// askAgent opens a stream on one of the connection's tunnels, sends req
// (its deadline set from timeout) and reads the agent's result. Opening
// falls back to the next tunnel while nothing has reached an agent. On an
// ok result the stream is returned open, holding its slot in the
// session's active count until closed; anything else is the refusal to
// answer with. A caller that goes away ends the wait at once.
func (s *Server) askAgent(ctx context.Context, conn store.Connection, req protocol.Request, timeout time.Duration) (*agentStream, protocol.Result, *apiError) {
	if conn.RevokedAt != nil {
		return nil, protocol.Result{}, &apiError{reason: protocol.ConnectionRevoked, msg: "connection " + conn.ID + " was revoked"}
	}
	cands := s.reg.candidates(conn.ID)
	if len(cands) == 0 {
		return nil, protocol.Result{}, s.offlineError(conn)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	req.DeadlineUnixMS = deadline.UnixMilli()

	busy := 0
	var lastErr error
	for _, sess := range cands {
		if sess.active.Load() >= int64(s.cfg.MaxStreamsPerTunnel) {
			busy++
			continue
		}
		st, release, err := sess.openStream(ctx)
		if err != nil {
			lastErr = err
			continue
		}
		ys := st
		fail := func() { _ = ys.Close(); release() }
		_ = ys.SetDeadline(deadline)
		stop := context.AfterFunc(ctx, func() { _ = ys.SetDeadline(time.Now()) })
		if err := protocol.WriteFrame(ys, protocol.FrameRequest, req); err != nil {
			stop()
			fail()
			lastErr = err
			continue // nothing reached the agent yet
		}
		res, err := protocol.ReadResult(ys)
		stop()
		if err != nil {
			fail()
			// The stream deadline and the context share one instant;
			// either may be noticed first.
			var ne net.Error
			if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
				return nil, res, &apiError{reason: protocol.ConnectTimeout, msg: "agent did not answer within " + timeout.String()}
			}
			return nil, res, &apiError{reason: protocol.ProtocolError, msg: "read agent result: " + err.Error()}
		}
		if !res.OK {
			fail()
			reason := res.Reason
			if reason == protocol.ReasonUnknown {
				reason = protocol.ProtocolError
			}
			return nil, res, &apiError{reason: reason, msg: res.Message, retryAfter: res.RetryAfterSeconds}
		}
		_ = ys.SetDeadline(time.Time{})
		return &agentStream{Stream: ys, release: release}, res, nil
	}
	if busy > 0 && lastErr == nil {
		return nil, protocol.Result{}, &apiError{reason: protocol.AgentBusy, msg: fmt.Sprintf("every tunnel has %d streams open", s.cfg.MaxStreamsPerTunnel), retryAfter: 1}
	}
	if ctx.Err() != nil {
		return nil, protocol.Result{}, &apiError{reason: protocol.ConnectTimeout, msg: "opening a stream to the agent timed out"}
	}
	return nil, protocol.Result{}, &apiError{reason: protocol.AgentOffline, msg: fmt.Sprintf("no agent tunnel accepted the stream: %v", lastErr)}
}

// offlineError explains why no tunnel is up for a connection.
func (s *Server) offlineError(conn store.Connection) *apiError {
	if at, msg := s.reg.authFailure(conn.ID); !at.IsZero() && time.Since(at) < s.cfg.AuthFailureWindow {
		return &apiError{reason: protocol.AgentAuthFailed, msg: msg + " at " + at.UTC().Format(time.RFC3339)}
	}
	if conn.FirstConnectedAt == nil {
		return &apiError{reason: protocol.AgentNeverConnected, msg: "no agent has ever connected for connection " + conn.ID}
	}
	msg := "no agent tunnel is up for connection " + conn.ID
	if conn.LastSeenAt != nil {
		msg += "; last seen " + conn.LastSeenAt.UTC().Format(time.RFC3339)
	}
	return &apiError{reason: protocol.AgentOffline, msg: msg}
}
