package tunnel

import (
	"crypto/tls"
	"io"
	"iter"
	"net"
	"syscall"
)

// maxTLSPayload is the most plaintext one TLS record carries, and
// maxTLSRecord the most bytes one takes on the wire: that payload with the
// largest expansion the protocol allows and the record header.
const (
	maxTLSPayload = 16 << 10
	maxTLSRecord  = maxTLSPayload + 256 + 5
)

// tlsPending returns, for a source that reads TLS from a socket, how many
// bytes wait unread in the socket; for any other source, nil.
//
// A TLS connection's Read returns one record, at most 16 KiB, however much
// has arrived, so a splice reading from it would cut a bulk transfer into
// 16 KiB tunnel frames, each paying for its own trip through the
// multiplexer, the WebSocket and both processes' system calls. With the
// count, the splice reads on while a whole record is already there, which
// never waits (see copyBuf).
//
// It sees through wrappers that name what they wrap with a NetConn
// method, as *tls.Conn does (see chain).
func tlsPending(src io.Reader) func() int {
	if t := tlsUnder(src); t != nil {
		return socketPending(t.NetConn())
	}
	return nil
}

// tlsUnder returns the TLS connection v is, or wraps, or nil.
func tlsUnder(v any) *tls.Conn {
	for c := range chain(v) {
		if t, ok := c.(*tls.Conn); ok {
			return t
		}
	}
	return nil
}

// socketPending returns the count of bytes waiting in the socket under c,
// or nil when c has no socket under it or the platform cannot tell.
func socketPending(c net.Conn) func() int {
	for c := range chain(c) {
		if sc, ok := c.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return unreadBytes(rc)
		}
	}
	return nil
}

// chain yields v, when it is a connection, and each connection under it
// that a NetConn method names, as *tls.Conn's does.
func chain(v any) iter.Seq[net.Conn] {
	return func(yield func(net.Conn) bool) {
		c, ok := v.(net.Conn)
		for ok && yield(c) {
			var u interface{ NetConn() net.Conn }
			if u, ok = c.(interface{ NetConn() net.Conn }); ok {
				c = u.NetConn()
			}
		}
	}
}

// tlsBatch returns, for a destination that writes TLS onto a connection
// accepted on a BatchListener, that connection's batch; else nil. A TLS
// connection writes a large buffer as one record of 16 KiB after
// another, each in its own system call; held in the batch, they leave in
// one.
func tlsBatch(dst io.Writer) *batch {
	if t := tlsUnder(dst); t != nil {
		return batchUnder(t)
	}
	return nil
}
