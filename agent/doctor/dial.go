package doctor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/postern/postern/agent/policy"
	"github.com/postern/postern/protocol"
)

// dialReason classifies a failed TCP connect the way the agent does.
func dialReason(err error) protocol.Reason { return policy.DialReason(err) }

// dialErrText is the short cause of a failed connect: "connection refused",
// "no answer (connect timeout)", "no route to host".
func dialErrText(err error) string {
	var errno syscall.Errno
	switch {
	case dialReason(err) == protocol.ConnectTimeout:
		return "no answer (connect timeout)"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}

// dialFirst connects to the first of addrs that answers, in order, as the
// agent does. On failure the error names every address tried.
func dialFirst(ctx context.Context, addrs []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	var d net.Dialer
	var errs []string
	var last error
	for _, ap := range addrs {
		conn, err := d.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return conn, ap, nil
		}
		last = err
		errs = append(errs, ap.String()+": "+dialErrText(err))
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		return nil, netip.AddrPort{}, errors.New("no address to connect to")
	}
	if len(errs) == 1 {
		return nil, netip.AddrPort{}, &dialError{text: dialErrText(last), err: last}
	}
	return nil, netip.AddrPort{}, &dialError{text: strings.Join(errs, "; "), err: last}
}

// dialError keeps the last cause for dialReason and a text naming every
// address tried.
type dialError struct {
	text string
	err  error
}

func (e *dialError) Error() string { return e.text }
func (e *dialError) Unwrap() error { return e.err }
