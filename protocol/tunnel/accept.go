package tunnel

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// OffersSubprotocol reports whether a request offers the subprotocol. A
// relay checks it before Upgrade so it can refuse with its own answer.
func OffersSubprotocol(r *http.Request, subprotocol string) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.TrimSpace(p) == subprotocol {
				return true
			}
		}
	}
	return false
}

// Upgrade answers a request with 101, selecting the subprotocol
// (protocol.Subprotocol on the tunnel endpoint, PeerSubprotocol between
// relay nodes) without compression, and returns the byte stream for Server.
// On failure it has already answered the request. The stream lives until
// ctx ends or it is closed, not as long as the request's context: a
// hijacked connection outlives its handler's request.
func Upgrade(ctx context.Context, w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, error) {
	hw := &hijackWatch{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		Subprotocols:    []string{subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	return wrap(ctx, ws, batchUnder(hw.conn)), nil
}

// hijackWatch keeps the connection the WebSocket library hijacks, so
// Upgrade can find the batch under it.
type hijackWatch struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackWatch) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, brw, err
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (h *hijackWatch) Unwrap() http.ResponseWriter { return h.ResponseWriter }
