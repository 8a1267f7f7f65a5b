package proxyproto

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/protocol/tunnel"
)

// Trusted is a list of the addresses whose PROXY headers are honoured.
type Trusted []netip.Prefix

// ParseTrusted reads a list of CIDRs or single addresses (a single address
// is its own /32 or /128) and reports every bad entry at once.
func ParseTrusted(entries []string) (Trusted, error) {
	var (
		out  Trusted
		errs []error
	)
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("trusted proxy %q: want a CIDR (10.0.0.0/8) or an address (192.0.2.10)", e))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}

// Contains reports whether addr (a *net.TCPAddr) is trusted.
func (t Trusted) Contains(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ap := tcp.AddrPort()
	a := ap.Addr().Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// bufSize is the read buffer a trusted connection holds until the bytes
// read past its header are consumed: room for a version 1 line or the
// fixed part of a version 2 header, and the first bytes after it.
const bufSize = 512

// Listener accepts connections from ln; those from Trusted addresses must
// start with a PROXY header, whose client address their RemoteAddr then
// returns. Others are returned as they are: a PROXY header from an
// untrusted address is never read, so it reaches the server as the
// garbage it is there.
type Listener struct {
	net.Listener
	trusted Trusted
	timeout time.Duration
	log     *slog.Logger
}

// NewListener wraps ln. timeout bounds reading a trusted connection's
// header; log hears of every refused header.
func NewListener(ln net.Listener, trusted Trusted, timeout time.Duration, log *slog.Logger) *Listener {
	return &Listener{Listener: ln, trusted: trusted, timeout: timeout, log: log}
}

// Accept returns the next connection. It never reads: a trusted
// connection's header is read on its first Read or RemoteAddr, in the
// goroutine that serves it, so a slow balancer cannot hold up Accept.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !l.trusted.Contains(c.RemoteAddr()) {
		return c, err
	}
	return &Conn{Conn: c, timeout: l.timeout, log: l.log}, nil
}

// Conn is a connection from a trusted address: its header is read once,
// within the timeout, before anything else. A connection whose header is
// missing or malformed fails every Read, so the server closes it.
type Conn struct {
	net.Conn
	timeout time.Duration
	log     *slog.Logger

	once   sync.Once
	remote net.Addr
	err    error
	// r holds what was read past the header; nil once it is drained.
	r *bufio.Reader
}

// NetConn returns the connection underneath, as *tls.Conn's does.
func (c *Conn) NetConn() net.Conn { return c.Conn }

var _ tunnel.WriteThrough = (*Conn)(nil)

// WriteThrough returns the connection underneath: Conn reads the header
// but leaves writes alone, so a splice may write to it directly
// (tunnel.WriteThrough).
func (c *Conn) WriteThrough() net.Conn { return c.Conn }

func (c *Conn) init() {
	c.once.Do(func() {
		c.remote = c.Conn.RemoteAddr()
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		c.r = bufio.NewReaderSize(c.Conn, bufSize)
		h, err := Read(c.r)
		_ = c.Conn.SetReadDeadline(time.Time{})
		if err != nil {
			// A read error, so that servers hang up without answering,
			// as they do on a connection that breaks.
			c.err = &net.OpError{Op: "read", Net: "tcp", Source: c.Conn.LocalAddr(), Addr: c.remote,
				Err: fmt.Errorf("PROXY header from trusted proxy: %w", err)}
			c.log.Warn("PROXY protocol: refused a connection from a trusted proxy", "proxy", c.remote.String(), "err", err)
			return
		}
		if !h.Local {
			c.remote = net.TCPAddrFromAddrPort(h.Source)
		}
	})
}

// RemoteAddr is the client's address from the header, or the connection's
// own when the header names none (or could not be read).
func (c *Conn) RemoteAddr() net.Addr {
	c.init()
	return c.remote
}

// Read reads what follows the header.
func (c *Conn) Read(p []byte) (int, error) {
	c.init()
	if c.err != nil {
		return 0, c.err
	}
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection underneath, so that a proxied
// stream's half-close reaches the client through the load balancer.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
