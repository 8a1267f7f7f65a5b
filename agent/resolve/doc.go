// Package resolve turns a target host name into addresses the way the customer's own machines
// would: /etc/hosts first, then the nameservers, search list and ndots of resolv.conf (or the
// agent's configured servers), queried with miekg/dns.
//
// It exists, instead of net.Resolver, because the agent must tell the cloud *why* a name did not
// resolve: NXDOMAIN, SERVFAIL and "no server answered" are distinct sentinels (ErrNXDomain,
// ErrServFail, ErrTimeout, ErrNoAddress) that map to distinct reason codes (see Reason). It also
// checks every reply against the question it asked, retries truncated replies over TCP, and
// never caches a zero TTL, so a rebinding name is resolved afresh on every Lookup.
//
// The package resolves names only. It does not decide whether an address may be dialled; the
// caller checks every returned address against the allowlist and dials the one it checked.
package resolve
