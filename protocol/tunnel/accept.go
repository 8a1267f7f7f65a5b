package tunnel

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/postern/postern/protocol"
)

// OffersSubprotocol reports whether a tunnel request offers postern.v1. A
// relay checks it before Upgrade so it can refuse with its own answer.
func OffersSubprotocol(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.TrimSpace(p) == protocol.Subprotocol {
				return true
			}
		}
	}
	return false
}

// Upgrade answers a tunnel request with 101, selecting postern.v1 without
// compression, and returns the byte stream for Server. On failure it has
// already answered the request. The stream lives until ctx ends or it is
// closed, not as long as the request's context: a hijacked connection
// outlives its handler's request.
func Upgrade(ctx context.Context, w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{protocol.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	return wrap(ctx, ws, nil), nil
}
