// Package policy is the agent's gate: the one place that decides whether
// the cloud may reach a target. It judges host:port with the allowlist,
// resolves a name once with the customer's DNS, applies the deny host rules
// to every name the lookup followed (CNAME targets), checks every address
// the resolver returned, and hands back a Decision: a value naming the result,
// the reason code, the rule, a sentence for a human, what the resolver
// answered and the addresses that may be dialled, in order. Report mode is
// one of a decision's results (Report), not a flag its callers carry; it
// lifts only ALLOWLIST_MISSING, never a deny rule or an unsafe address.
//
// It owns the policy in force (the allowlist, its mode and the summary the
// relay is told) and swaps it atomically on reload. Decision.Dial connects
// only to the addresses the gate checked.
//
// It reads no file and knows nothing of tunnels, frames on the wire or the
// audit log: streams (agent/stream), live checks and the doctor ask it and
// act on its answer.
package policy
