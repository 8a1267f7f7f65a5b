package main

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// Keep-alive of the connections the relay accepts: Go's own defaults, so
// a client that vanishes is noticed as before.
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// listenTCP opens addr with TCP keep-alive set once, on the listening
// socket, which Linux copies to every connection it accepts. Go would set
// it on each accepted connection instead: four system calls per accept,
// about a tenth of those a CONNECT costs the relay.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1, // inherited from the listener, below
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				for _, o := range []struct{ level, opt, v int }{
					{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, int(keepAliveIdle / time.Second)},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, int(keepAliveInterval / time.Second)},
					{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
				} {
					if serr = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
						return
					}
				}
			})
			return errors.Join(err, serr)
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}
