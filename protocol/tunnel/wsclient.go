package tunnel

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// The client side of the WebSocket opening handshake (RFC 6455 section
// 4.1), for agents and relay nodes dialling a relay; wsconn.go carries
// the frames. The request goes through the caller's HTTP client, so its
// egress proxy, TLS roots and redirect rule apply as to any request.

// upgradeRefused is an answer other than 101; its body is the caller's
// to read and close.
type upgradeRefused struct{ resp *http.Response }

func (e *upgradeRefused) Error() string { return "relay answered " + e.resp.Status }

// dialWebSocket sends the opening handshake to to (a ws://, wss://,
// http:// or https:// URL) with hc, offering subprotocol, and returns the
// client end of the WebSocket. sock, when not nil, returns the socket the
// request went out on (for deadlines and addresses). It returns
// *upgradeRefused for an answer other than 101, ErrBadUpgrade for a 101
// that is no valid WebSocket answer, and *SubprotocolError when the
// server selects another subprotocol.
func dialWebSocket(ctx context.Context, hc *http.Client, to string, hdr http.Header, subprotocol string, sock func() net.Conn) (*wsConn, error) {
	u, err := url.Parse(to)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("websocket: URL scheme %q is not ws, wss, http or https", u.Scheme)
	}
	var nonce [16]byte
	_, _ = crand.Read(nonce[:]) // never fails (crypto/rand panics rather)
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header = hdr.Clone()
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Protocol", subprotocol)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, &upgradeRefused{resp: resp}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if err := checkUpgrade(resp, key); err != nil || !ok {
		_ = resp.Body.Close()
		if err == nil {
			err = errors.New("the upgraded connection cannot be written")
		}
		return nil, fmt.Errorf("%w: %v", ErrBadUpgrade, err)
	}
	var under net.Conn
	if sock != nil {
		under = sock()
	}
	ws := newClientConn(&upgraded{ReadWriteCloser: rwc, sock: under})
	if chosen := resp.Header.Get("Sec-WebSocket-Protocol"); chosen != subprotocol {
		ws.sendClose(closeProtocol, "subprotocol "+subprotocol+" required")
		_ = ws.Conn.Close()
		return nil, &SubprotocolError{Chosen: chosen, Wanted: subprotocol}
	}
	return ws, nil
}

// checkUpgrade checks a 101 answer to an opening handshake that sent key
// and offered no extension.
func checkUpgrade(resp *http.Response, key string) error {
	switch {
	case !hasToken(resp.Header, "Connection", "upgrade") || !hasToken(resp.Header, "Upgrade", "websocket"):
		return errors.New("the answer lacks Connection: Upgrade and Upgrade: websocket")
	case resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key):
		return fmt.Errorf("Sec-WebSocket-Accept %q does not answer the key sent", resp.Header.Get("Sec-WebSocket-Accept"))
	case resp.Header.Get("Sec-WebSocket-Extensions") != "":
		return fmt.Errorf("the server chose extensions %q, none were offered", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	return nil
}

// upgraded is the connection an HTTP client hands over after 101: its
// reads and writes, with the deadlines and addresses of the socket under
// it when the dialler caught that socket.
type upgraded struct {
	io.ReadWriteCloser
	sock net.Conn // nil when unknown
}

// wsAddr names an end whose socket is unknown.
type wsAddr struct{}

func (wsAddr) Network() string { return "websocket" }
func (wsAddr) String() string  { return "websocket" }

func (u *upgraded) LocalAddr() net.Addr {
	if u.sock == nil {
		return wsAddr{}
	}
	return u.sock.LocalAddr()
}

func (u *upgraded) RemoteAddr() net.Addr {
	if u.sock == nil {
		return wsAddr{}
	}
	return u.sock.RemoteAddr()
}

var errNoDeadline = errors.New("websocket: the connection under this WebSocket is unknown, so it takes no deadline")

func (u *upgraded) SetDeadline(t time.Time) error {
	if u.sock == nil {
		return errNoDeadline
	}
	return u.sock.SetDeadline(t)
}

func (u *upgraded) SetReadDeadline(t time.Time) error {
	if u.sock == nil {
		return errNoDeadline
	}
	return u.sock.SetReadDeadline(t)
}

func (u *upgraded) SetWriteDeadline(t time.Time) error {
	if u.sock == nil {
		return errNoDeadline
	}
	return u.sock.SetWriteDeadline(t)
}
