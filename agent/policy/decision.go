package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/agent/resolve"
	"github.com/postern/postern/protocol"
)

// Result is what the caller of the gate does with a target.
type Result uint8

// Results. The zero value decides nothing and allows nothing.
const (
	// ResultUnknown is the zero value: no decision was made.
	ResultUnknown Result = iota
	// Allow: every check passed; dial Addrs.
	Allow
	// Report: report mode lets through a target no allow rule covers,
	// which enforce mode would refuse with ALLOWLIST_MISSING; dial Addrs,
	// and record Waived (the would-be refusal) and Reason.
	Report
	// Deny: refuse with Reason and Message; nothing may be dialled.
	Deny
)

var resultNames = [...]string{ResultUnknown: "unknown", Allow: "allow", Report: "report", Deny: "deny"}

// String returns the result's stable lower-case name.
func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// Decision is the gate's answer on one target. A refusal is a Decision,
// not an error.
type Decision struct {
	Result Result
	// Reason is the refusal's code (Deny), or the code enforce mode would
	// refuse with (Report); empty on Allow.
	Reason protocol.Reason
	// Rule is the allowlist rule that judged host:port: the allow rule that
	// covers it, or the deny rule or always-blocked class that refuses it.
	Rule string
	// Message is one sentence for a human: why the target is refused, or
	// why enforce mode would refuse it.
	Message string
	// Mode is the mode of the policy the decision was made under; a
	// decision made with DecideEnforce still says the mode in force.
	Mode config.Mode

	// Resolved says the name was looked up: the rules let host:port
	// through, and any refusal came from DNS, a deny rule on a name the
	// lookup followed, or the address checks.
	Resolved bool
	// Answer says how the resolver answered and Found is every address it
	// returned, checked or not. Both are zero for an address literal.
	Answer resolve.Answer
	Found  []netip.Addr
	// Blocked are the resolved addresses the rules refuse, with why,
	// whatever the mode. No mode dials them.
	Blocked []Refusal
	// Waived are the refusals report mode let through, in the order they
	// were met: only ever ALLOWLIST_MISSING; empty in enforce mode.
	Waived []Refusal

	// Addrs are the addresses that may be dialled, in order; empty unless
	// the result is Allow or Report.
	Addrs []netip.AddrPort
}

// Refusal is one judgement the rules refused.
type Refusal struct {
	Reason protocol.Reason
	Rule   string
	Why    string
	// Addr is the resolved address refused; zero when the target itself
	// (host:port) was refused.
	Addr netip.Addr
}

// MayDial reports whether the caller may dial Addrs.
func (d Decision) MayDial() bool { return d.Result == Allow || d.Result == Report }

// Refusal is the result frame that refuses the target.
func (d Decision) Refusal() protocol.Result {
	return protocol.Result{Reason: d.Reason, Message: d.Message, Rule: d.Rule}
}

func (d Decision) deny(reason protocol.Reason, msg string) Decision {
	d.Result, d.Reason, d.Message, d.Addrs = Deny, reason, msg, nil
	return d
}

// waive records a refusal report mode lets through.
func (d *Decision) waive(r Refusal) {
	d.Result, d.Reason, d.Message = Report, r.Reason, r.Why
	d.Waived = append(d.Waived, r)
}

// DialFunc dials one address the gate checked.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial connects to the decision's addresses in order, the next one when a
// dial fails. It returns the connection with an ok result, or nil and the
// refusal (a Deny) or the last failure.
func (d Decision) Dial(ctx context.Context, dial DialFunc) (net.Conn, protocol.Result) {
	if !d.MayDial() {
		return nil, d.Refusal()
	}
	last := protocol.Result{Reason: protocol.HostUnreachable, Message: "no address to dial", Rule: d.Rule}
	for _, ap := range d.Addrs {
		conn, err := dial(ctx, "tcp", ap.String())
		if err != nil {
			last = protocol.Result{Reason: DialReason(err), Message: fmt.Sprintf("dial %s: %v", ap, err), Rule: d.Rule}
			continue
		}
		return conn, protocol.Result{OK: true, Addr: ap.String(), Rule: d.Rule}
	}
	return nil, last
}

// DialReason classifies a failed TCP connect as a reason code.
func DialReason(err error) protocol.Reason {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return protocol.ConnectRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return protocol.HostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return protocol.ConnectTimeout
	}
	return protocol.HostUnreachable
}
