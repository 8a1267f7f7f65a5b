package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
)

// Bounds of the CONNECT handshake.
const (
	// DefaultHandshakeTimeout bounds dialing the proxy and reading its
	// answer when the caller's context sets no earlier deadline. The relay
	// waits up to 15 s for the agent's result; this leaves room for the
	// round trip.
	DefaultHandshakeTimeout = 20 * time.Second
	// MaxProxyHeaderBytes bounds the proxy's status line and headers.
	MaxProxyHeaderBytes = 32 << 10
	// MaxProxyErrorBody bounds the body of a refusal the client reads.
	MaxProxyErrorBody = 64 << 10
)

// ErrBadDialerConfig wraps every problem NewDialer finds in a DialerConfig.
var ErrBadDialerConfig = errors.New("bad dialer config")

// DialerConfig names the relay's CONNECT proxy and the connection to reach
// through it. Its key never reaches fmt or slog output.
type DialerConfig struct {
	// Proxy is the proxy listener's host:port (the relay's --proxy-listen).
	Proxy string
	// ConnectionID is the connection whose agent dials the targets.
	ConnectionID string
	// APIKey is an admin key or a key of the connection's workspace.
	APIKey string
	// TLS, when set, speaks TLS to the proxy with this configuration (a
	// relay behind a TLS terminator). The provider's own TLS is separate:
	// it runs inside the tunnel, end to end.
	TLS *tls.Config
	// DialProxy opens the TCP connection to the proxy; nil uses a
	// net.Dialer. A seam for tests and for egress through another proxy.
	DialProxy func(ctx context.Context, network, addr string) (net.Conn, error)
	// HandshakeTimeout bounds dialing the proxy and reading its answer;
	// zero means DefaultHandshakeTimeout. The caller's context may end it
	// sooner.
	HandshakeTimeout time.Duration
}

// String names the proxy and the connection and hides the key.
func (c DialerConfig) String() string {
	return "relay proxy " + c.Proxy + " for connection " + c.ConnectionID
}

// Format makes every fmt verb print String, so the key never leaks into a
// log line or an error message by accident.
func (c DialerConfig) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// LogValue hides the key from slog.
func (c DialerConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Validate reports every problem in c; the error never carries the key.
func (c DialerConfig) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Proxy); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("%w: proxy %q is not host:port", ErrBadDialerConfig, c.Proxy))
	}
	if c.ConnectionID == "" || strings.ContainsAny(c.ConnectionID, ":\r\n") {
		errs = append(errs, fmt.Errorf("%w: connection id must be non-empty, without ':' or line breaks", ErrBadDialerConfig))
	}
	if c.APIKey == "" || strings.ContainsAny(c.APIKey, "\r\n") {
		errs = append(errs, fmt.Errorf("%w: API key must be non-empty, without line breaks", ErrBadDialerConfig))
	}
	if c.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: handshake timeout must not be negative", ErrBadDialerConfig))
	}
	return errors.Join(errs...)
}

// Dialer opens connections to targets inside a customer network through the
// relay's CONNECT proxy. It is safe for concurrent use. Its DialContext has
// the signature of net.Dialer.DialContext, so it plugs into http.Transport
// (see NewTransport), database drivers and git clients alike.
type Dialer struct {
	cfg  DialerConfig
	auth string // the Proxy-Authorization value
}

// NewDialer checks cfg and returns its Dialer.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.DialProxy == nil {
		cfg.DialProxy = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	cred := base64.StdEncoding.EncodeToString([]byte(cfg.ConnectionID + ":" + cfg.APIKey))
	return &Dialer{cfg: cfg, auth: "Basic " + cred}, nil
}

// String names the proxy and connection and hides the key.
func (d *Dialer) String() string { return d.cfg.String() }

// Format makes every fmt verb print String.
func (d *Dialer) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, d.String()) }

// LogValue hides the key from slog.
func (d *Dialer) LogValue() slog.Value { return slog.StringValue(d.String()) }

// ProxyError is a CONNECT the relay refused. It wraps the relay's
// *protocol.Error, so errors.As finds either type:
//
//	var pe *protocol.Error
//	if errors.As(err, &pe) && pe.ProviderErrorCode == protocol.ProviderConnectivityBlocked { ... }
//
// Branch on the reason or the provider code, never on StatusCode alone:
// several reasons share a status.
type ProxyError struct {
	// Target is the host:port that was asked for.
	Target string
	// StatusCode is the proxy's HTTP status.
	StatusCode int
	// Err is the relay's answer: reason, provider_error_code, message,
	// retry_after and request id.
	Err *protocol.Error
}

// Error reads "CONNECT gitlab.corp:443: HTTP 403: ALLOWLIST_MISSING: no
// allow rule covers gitlab.corp:443 (request 3f9a1c0d)".
func (e *ProxyError) Error() string {
	msg := "CONNECT " + e.Target + ": HTTP " + strconv.Itoa(e.StatusCode) + ": " + printable(e.Err.Error())
	if e.Err.RequestID != "" {
		msg += " (request " + printable(e.Err.RequestID) + ")"
	}
	return msg
}

// Unwrap returns the relay's reason error.
func (e *ProxyError) Unwrap() error { return e.Err }

// Retryable says whether the same CONNECT may work after RetryAfter
// seconds: the reasons the relay marks with a Retry-After (rate limits, a
// busy agent, an unreachable node).
func (e *ProxyError) Retryable() bool { return e.Err.Reason.Info().RetryAfter || e.Err.RetryAfter > 0 }

// DialContext opens a stream to addr ("host:port") through the relay: it
// dials the proxy, sends CONNECT with the connection id and key, and on
// "200 Connection established" returns the connection, ready for the
// target's bytes (bytes the proxy sent after its answer are kept). network
// must be "tcp", "tcp4" or "tcp6"; the agent picks the address family.
//
// The context's deadline and the config's HandshakeTimeout bound the
// handshake; cancelling ctx during it aborts the dial. Neither applies to
// the returned connection, which has no deadline set.
//
// A refusal is a *ProxyError wrapping the relay's *protocol.Error. An
// answer that is not the relay's (another proxy in the way) is an
// *UnexpectedResponseError. No error carries the API key.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("CONNECT %s: network %q: only tcp is carried", printable(addr), printable(network))
	}
	if err := validTarget(addr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	conn, err := d.cfg.DialProxy(ctx, "tcp", d.cfg.Proxy)
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: dial relay proxy %s: %w", addr, d.cfg.Proxy, err)
	}
	out, err := d.handshake(ctx, conn, addr)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return out, nil
}

// validTarget refuses what cannot be a CONNECT target before anything is
// sent: the relay would answer BAD_TARGET, and a line break would forge a
// header.
func validTarget(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || strings.ContainsAny(addr, " \r\n") || len(host) > protocol.MaxHostLen {
		return fmt.Errorf("CONNECT %q: want host:port", printable(addr))
	}
	return nil
}

// handshake sends the CONNECT and reads the answer under ctx.
func (d *Dialer) handshake(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	// Cancelling ctx unblocks a read or write in flight.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if d.cfg.TLS != nil {
		tc := tls.Client(conn, d.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("CONNECT %s: TLS to relay proxy %s: %w", addr, d.cfg.Proxy, ctxErr(ctx, err))
		}
		conn = tc
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\nProxy-Authorization: " + d.auth +
		"\r\nUser-Agent: postern-client\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("CONNECT %s: send to relay proxy %s: %w", addr, d.cfg.Proxy, ctxErr(ctx, err))
	}
	lr := &headerLimit{r: conn, n: MaxProxyHeaderBytes}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: read relay proxy answer: %w", addr, ctxErr(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, refusal(addr, resp)
	}
	if stop() {
		_ = conn.SetDeadline(time.Time{})
	} else {
		return nil, fmt.Errorf("CONNECT %s: %w", addr, ctx.Err())
	}
	lr.n = -1 // the data phase is not bounded
	if br.Buffered() == 0 {
		return conn, nil
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

func (d *Dialer) tlsConfig() *tls.Config {
	cfg := d.cfg.TLS.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(d.cfg.Proxy)
	}
	return cfg
}

// ctxErr prefers the context's reason over the deadline error it caused.
// The connection's deadline is the context's, so a timeout at or past that
// deadline is the context's even before its timer has fired.
func ctxErr(ctx context.Context, err error) error {
	if cause := ctx.Err(); cause != nil {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	if deadline, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(deadline) {
		return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}

// refusal turns a non-200 answer into *ProxyError when it is the relay's,
// else *UnexpectedResponseError.
func refusal(addr string, resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxProxyErrorBody))
	var body protocol.Error
	if json.Unmarshal(data, &body) != nil || body.Reason == "" {
		body = protocol.Error{Reason: protocol.Reason(resp.Header.Get("Postern-Reason"))}
	}
	if body.Reason == "" {
		return fmt.Errorf("CONNECT %s: %w", addr, &UnexpectedResponseError{
			StatusCode: resp.StatusCode, Status: resp.Status, ContentType: resp.Header.Get("Content-Type"),
		})
	}
	if body.RequestID == "" {
		body.RequestID = resp.Header.Get("Postern-Request-Id")
	}
	if body.ProviderErrorCode == "" {
		body.ProviderErrorCode = body.Reason.Info().ProviderErrorCode
	}
	if body.RetryAfter <= 0 {
		if wait, ok := protocol.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			body.RetryAfter = int((wait + time.Second - 1) / time.Second)
		}
	}
	body.Message = printable(body.Message)
	return &ProxyError{Target: addr, StatusCode: resp.StatusCode, Err: &body}
}

// headerLimit bounds what the handshake reads; n < 0 lifts the bound for
// the data phase.
type headerLimit struct {
	r io.Reader
	n int
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, fmt.Errorf("relay proxy answer over %d bytes", MaxProxyHeaderBytes)
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// bufferedConn serves the bytes read past the proxy's answer before the
// rest of the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when the transport can (TCP, TLS),
// so a target sees the end of the request.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
