// Package doctor diagnoses an agent installation layer by layer, the way a
// network engineer would walk the path by hand: is the config valid, is the
// token file present and private, does the relay's name resolve, does the
// egress proxy let us through, does TCP connect, is the relay's certificate
// trusted (and who issued it, so TLS interception is visible), does the
// relay upgrade /v1/tunnel to WebSocket with subprotocol postern.v1, does it
// accept the token and answer Hello with Welcome; then, for every allow
// rule, DNS, TCP and TLS towards the target.
//
// Every check ends PASS, WARN, FAIL or SKIP with a duration, a detail and,
// on failure, one line saying what to do. A layer whose prerequisite failed
// is skipped and says which one, so the first FAIL is the cause.
//
// The package owns the diagnosis only. It reads the config and the token
// but never changes them; it opens one short-lived tunnel per relay as agent
// "<agent_id>-doctor" and closes it after Welcome; it serves no streams.
// Every network step has its own timeout and the whole run a budget.
package doctor
