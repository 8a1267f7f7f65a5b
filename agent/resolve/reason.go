package resolve

import (
	"context"
	"errors"

	"github.com/postern/postern/protocol"
)

// Reason maps a Lookup error to the reason code the agent reports. A name that exists without
// addresses is reported as DNS_NXDOMAIN: for the caller, both mean "this name has nothing to
// connect to". A caller deadline that ran out during the lookup is DNS_TIMEOUT. Errors that are
// not from this package give protocol.ReasonUnknown.
func Reason(err error) protocol.Reason {
	switch {
	case err == nil:
		return protocol.ReasonUnknown
	case errors.Is(err, ErrNXDomain), errors.Is(err, ErrNoAddress):
		return protocol.DNSNXDomain
	case errors.Is(err, ErrServFail):
		return protocol.DNSServFail
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return protocol.DNSTimeout
	case errors.Is(err, ErrInvalidName):
		return protocol.BadTarget
	}
	return protocol.ReasonUnknown
}
