package tunnel

import (
	"crypto/sha1" //nolint:gosec // RFC 6455 fixes SHA-1 for Sec-WebSocket-Accept; it is no security boundary
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// The server side of the WebSocket opening handshake, for the relay's
// end of a tunnel; wsconn.go carries the frames.

// wsAcceptGUID is the constant RFC 6455 appends to Sec-WebSocket-Key.
const wsAcceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptWebSocket checks a WebSocket opening request, answering its
// refusal itself, then hijacks the connection and answers 101 with
// subprotocol when the request offers it.
func acceptWebSocket(w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, []byte, error) {
	if code, err := checkOpening(w, r); err != nil {
		http.Error(w, err.Error(), code)
		return nil, nil, err
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return nil, nil, fmt.Errorf("websocket: hijack: %w", err)
	}
	// Bytes the client sent behind its request are the tunnel's first.
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	early = append([]byte(nil), early...)
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	if OffersSubprotocol(r, subprotocol) {
		b.WriteString("\r\nSec-WebSocket-Protocol: " + subprotocol)
	}
	b.WriteString("\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("websocket: answering 101: %w", err)
	}
	return conn, early, nil
}

// checkOpening returns the status and the reason a request is no valid
// WebSocket opening handshake, or nil.
func checkOpening(w http.ResponseWriter, r *http.Request) (int, error) {
	switch {
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, fmt.Errorf("websocket: the opening handshake is a GET, not %s", r.Method)
	case !r.ProtoAtLeast(1, 1):
		return http.StatusUpgradeRequired, fmt.Errorf("websocket: the opening handshake needs HTTP/1.1, not %s", r.Proto)
	case !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket"):
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, errors.New("websocket: the request asks for no upgrade to websocket (Connection: Upgrade, Upgrade: websocket)")
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, fmt.Errorf("websocket: version %q; this server speaks 13", r.Header.Get("Sec-WebSocket-Version"))
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		return http.StatusBadRequest, errors.New("websocket: Sec-WebSocket-Key is not 16 bytes in base64")
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameHost(origin, r.Host) {
		// A browser page of another site: tunnels come from agents,
		// which send no Origin.
		return http.StatusForbidden, fmt.Errorf("websocket: origin %q is not this host", origin)
	}
	return 0, nil
}

// hasToken reports whether a comma-separated header holds token, in any
// case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// sameHost reports whether origin (scheme://host[:port]) names host.
func sameHost(origin, host string) bool {
	_, rest, ok := strings.Cut(origin, "://")
	return ok && strings.EqualFold(rest, host)
}

// wsAccept is the Sec-WebSocket-Accept answer to key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsAcceptGUID)) //nolint:gosec // see the import
	return base64.StdEncoding.EncodeToString(h[:])
}
