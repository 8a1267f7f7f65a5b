package allowlist

import "strconv"

// Verdict is the outcome of judging a target. The zero value is
// VerdictUnknown and never means allowed.
type Verdict uint8

// Verdicts.
const (
	// VerdictUnknown is the zero value; no decision was made.
	VerdictUnknown Verdict = iota
	// Allowed means an allow rule covers the target and nothing blocks it.
	Allowed
	// Missing means no allow rule covers the target and port.
	Missing
	// Blocked means a deny rule or the always-blocked set refuses the target.
	Blocked
	// BadTarget means the host or port is malformed.
	BadTarget
)

var verdictNames = [...]string{
	VerdictUnknown: "unknown",
	Allowed:        "allowed",
	Missing:        "missing",
	Blocked:        "blocked",
	BadTarget:      "bad_target",
}

// String returns the verdict's stable lower-case name, as used in audit logs
// and in the relay's allowlist_status field.
func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// MarshalText encodes the verdict as its String form.
func (v Verdict) MarshalText() ([]byte, error) {
	return []byte(v.String()), nil
}

// Decision is the judgement on one target: a verdict, the rule that decided
// it and a sentence a human can act on. A refusal is a Decision, not an error.
type Decision struct {
	Verdict Verdict
	// Rule is the normalized rule that decided, such as
	// "allow host=*.corp.example ports=443", "deny cidr=10.20.5.0/24 ports=*"
	// or "always-blocked loopback". It is empty when no rule decided.
	Rule string
	// Reason is one human sentence explaining the verdict.
	Reason string
}

// Allowed reports whether the verdict is Allowed.
func (d Decision) Allowed() bool { return d.Verdict == Allowed }
