// Package allowlist decides whether the agent may reach a host and port, and
// says why. It owns the rule grammar, the one normalization of a requested
// host, and the list of addresses that are never safe to reach. It never
// touches the network or the file system: callers hand it rules and targets
// and get back values.
//
// # Rules
//
// A rule names exactly one of a host, an IP address or a CIDR block, plus
// ports. Host rules are exact ("gitlab.corp.example") or wildcards
// ("*.corp.example"); a wildcard matches every name strictly below its suffix
// but not the suffix itself. Host names are IDNA-mapped to punycode,
// lower-cased, and a single trailing dot is dropped, so "Bücher.Example." and
// "xn--bcher-kva.example" are the same rule. Ports are single ports ("443") or
// inclusive ranges ("8000-8100") within 1-65535. Allow rules must list ports;
// a deny rule without ports covers every port. Deny beats allow. A list with
// no allow rules refuses everything.
//
// # Targets
//
// [NormalizeHost] accepts a DNS name, a dotted-quad IPv4 address, or an IPv6
// address with or without brackets. Anything that a resolver or socket
// library might reinterpret is refused instead of guessed at: decimal, octal,
// hex and short IPv4 forms, leading zeros, zone ids, userinfo, embedded
// ports, and names whose last label is numeric.
//
// Host rules judge names; ip and cidr rules judge addresses. A name target is
// judged by [List.Decide] against host rules only; once the caller has
// resolved it, every resolved address must pass [List.CheckAddr], which
// applies deny rules and the always-blocked set. An IP-literal target is
// judged by Decide against ip and cidr rules, deny rules and the
// always-blocked set at once.
//
// # Always blocked
//
// Loopback, unspecified, "this network" (0.0.0.0/8), link-local (including
// the cloud metadata address 169.254.169.254), the AWS IPv6 metadata address
// fd00:ec2::254, Alibaba Cloud's metadata address 100.100.100.200, Azure's
// WireServer 168.63.129.16, multicast, the IPv4 broadcast address, IPv6
// site-local fec0::/10 and the local-use NAT64 block 64:ff9b:1::/48 are
// blocked unless an allow rule names that exact address (an ip rule, or a
// /32 or /128 cidr rule) with the requested port. [Rules.Blocked] adds the
// customer's own addresses and blocks to the set, under the same exception.
// IPv4 addresses carried inside IPv6 (IPv4-mapped, IPv4-translated
// ::ffff:0:0:0/96, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16 and
// the Teredo client address in 2001::/32) are unwrapped: the IPv6 form and
// the embedded IPv4 form must both pass the always-blocked set and the deny
// rules. Allow rules match the address itself, with IPv4-mapped addresses
// treated as the IPv4 address they map.
//
// A deny rule or the always-blocked set refuses a target (Blocked) before
// the question of whether an allow rule covers it (Missing) is asked, so a
// caller that waives Missing, as the agent's report mode does, never waives
// a block. [List.CheckName] applies deny host rules to the names a lookup
// followed (CNAME targets), so an alias cannot lead around them.
//
// When several rules match, the decision names the first one in list order.
package allowlist
