package proxy

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/reply"
)

// CheckLines wraps the proxy listener so that a CONNECT whose target is not
// plain host:port is refused BAD_TARGET with the reason table's answer.
// net/http refuses many such request lines itself (user info, a path,
// percent-encoding, bracketed IPv4) with a bare 400 before any handler
// runs, which tells the product nothing; this looks at the first request
// line of each connection before net/http does, and at the next one each
// time the connection goes idle between keep-alive requests (see
// Proxy.ConnState). refused, if not nil, is told of each refusal.
func CheckLines(ln net.Listener, refused func(protocol.Reason)) net.Listener {
	if refused == nil {
		refused = func(protocol.Reason) {}
	}
	return &lineListener{Listener: ln, refused: refused}
}

type lineListener struct {
	net.Listener
	refused func(protocol.Reason)
}

func (l *lineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &lineConn{Conn: c, refused: l.refused}
	lc.pending.Store(true)
	return lc, nil
}

// maxFirstLine bounds how much is read looking for a request line; a
// longer line is left to net/http, which refuses it.
const maxFirstLine = 8 << 10

// lineConn holds back a request line until it is checked.
type lineConn struct {
	net.Conn
	refused func(protocol.Reason)
	// pending is set when the next byte read starts a request: on
	// accept, and when the connection goes idle between requests.
	pending atomic.Bool
	held    []byte // read while checking, not yet returned
	// lead is the byte of the last read when that read asked for one
	// byte: net/http reads one byte in the background while a handler
	// runs, so the next request line may have lost its first byte to it
	// by the time the connection is idle.
	lead    byte
	hasLead bool
}

// recheck makes c check the next request line too. net/http calls it
// (through ConnState) when the connection goes idle after an answer,
// where the next bytes from the client begin a request; bytes still held
// from the last check are the rest of a request, so they go on unchecked.
func recheck(c net.Conn) {
	if lc, ok := c.(*lineConn); ok {
		lc.pending.Store(true)
	}
}

func (c *lineConn) Read(p []byte) (int, error) {
	if c.pending.Swap(false) && len(c.held) == 0 {
		var lead []byte
		if c.hasLead {
			lead = []byte{c.lead}
		}
		if err := c.checkFirstLine(lead); err != nil {
			return 0, err
		}
	}
	c.hasLead = false
	if len(c.held) > 0 {
		n := copy(p, c.held)
		c.held = c.held[n:]
		if len(c.held) == 0 {
			c.held = nil // the line's buffer goes
		}
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if len(p) == 1 && n == 1 {
		c.lead, c.hasLead = p[0], true
	}
	return n, err
}

// checkFirstLine reads up to the end of a request line, whose first bytes
// net/http already has (lead), and answers a bad CONNECT target itself.
// A read error comes after the held bytes.
func (c *lineConn) checkFirstLine(lead []byte) error {
	buf := make([]byte, 1<<10)
	n := copy(buf, lead)
	for n < maxFirstLine {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := c.Conn.Read(buf[n:])
		n += m
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			c.held = buf[len(lead):n]
			return c.answer(bytes.TrimRight(buf[:i], "\r"))
		}
		if err != nil {
			c.held = buf[len(lead):n]
			if n == len(lead) {
				return err
			}
			return nil // net/http sees the partial line, then the error
		}
	}
	c.held = buf[len(lead):n]
	return nil
}

// answer refuses line when it is a CONNECT with a bad target.
func (c *lineConn) answer(line []byte) error {
	target, ok := connectTarget(line)
	if !ok {
		return nil
	}
	e := CheckTarget(target)
	if e == nil {
		return nil
	}
	c.refused(e.Reason)
	reply.RefuseConn(c.Conn, reply.NewID(8), e)
	c.held = nil
	return io.EOF
}

// CloseWrite half-closes the connection underneath, so that a CONNECT's
// half-close still reaches the client.
func (c *lineConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c when it can, and closes it otherwise.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// NetConn returns the connection underneath, as *tls.Conn's does, so the
// splice can see the TLS connection it reads from.
func (c *lineConn) NetConn() net.Conn { return c.Conn }
