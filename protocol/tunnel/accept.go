package tunnel

import (
	"context"
	"net"
	"net/http"
	"strings"
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
// relay nodes) when the request offers it, without extensions, and returns
// the byte stream for Server. On failure it has already answered the
// request. The stream lives until ctx ends or it is closed, not as long as
// the request's context: a hijacked connection outlives its handler's
// request.
func Upgrade(ctx context.Context, w http.ResponseWriter, r *http.Request, subprotocol string) (net.Conn, error) {
	conn, early, err := acceptWebSocket(w, r, subprotocol)
	if err != nil {
		return nil, err
	}
	b := batchUnder(conn)
	if tcp, ok := plainTCP(conn, b); ok {
		// The server end writes each message in one vectored system
		// call itself; gathering it in the batch would only copy it.
		conn, b = tcp, nil
	}
	ws := newServerConn(conn, early)
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	return newCoalescer(&endsWith{wsConn: ws, stop: stop}, b), nil
}

// plainTCP returns the TCP connection under a batch that is itself the
// hijacked connection, with no TLS or other layer between.
func plainTCP(conn net.Conn, b *batch) (*net.TCPConn, bool) {
	if b == nil || conn != net.Conn(b) {
		return nil, false
	}
	tcp, ok := b.Conn.(*net.TCPConn)
	return tcp, ok
}

// endsWith is a server end that stops watching its context once closed.
type endsWith struct {
	*wsConn
	stop func() bool
}

func (e *endsWith) Close() error {
	e.stop()
	return e.wsConn.Close()
}
