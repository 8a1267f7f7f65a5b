package allowlist

import "net/netip"

// unsafeClass is one kind of always-blocked address.
type unsafeClass struct {
	rule string // "always-blocked loopback"
	desc string // "loopback", as used in reasons
}

var (
	classLoopback    = unsafeClass{"always-blocked loopback", "loopback"}
	classUnspecified = unsafeClass{"always-blocked unspecified", "the unspecified address"}
	classThisNetwork = unsafeClass{"always-blocked this-network", `in 0.0.0.0/8 ("this network")`}
	classLinkLocal   = unsafeClass{"always-blocked link-local", "link-local"}
	classMetadata4   = unsafeClass{"always-blocked link-local", "link-local (cloud metadata)"}
	classMetadata6   = unsafeClass{"always-blocked metadata", "the AWS IPv6 instance metadata address"}
	classAlibaba     = unsafeClass{"always-blocked metadata", "the Alibaba Cloud instance metadata address"}
	classWireServer  = unsafeClass{"always-blocked metadata", "the Azure WireServer address"}
	classMulticast   = unsafeClass{"always-blocked multicast", "multicast"}
	classBroadcast   = unsafeClass{"always-blocked broadcast", "the IPv4 broadcast address"}
	classSiteLocal   = unsafeClass{"always-blocked site-local", "IPv6 site-local (fec0::/10, deprecated)"}
	classNAT64Local  = unsafeClass{"always-blocked nat64-local",
		"in the local-use NAT64 prefix 64:ff9b:1::/48, which can carry any IPv4 address"}
)

var (
	metadataV4 = netip.AddrFrom4([4]byte{169, 254, 169, 254})
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
	// alibabaMetadata is Alibaba Cloud's instance metadata service, in the
	// shared address space 100.64.0.0/10 that a broad cidr rule may cover.
	alibabaMetadata = netip.AddrFrom4([4]byte{100, 100, 100, 200})
	// wireServer is Azure's host endpoint (certificates, extensions,
	// DHCP and DNS for the VM), a public address that answers only
	// inside Azure.
	wireServer = netip.AddrFrom4([4]byte{168, 63, 129, 16})
	broadcast  = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	// siteLocal is the IPv6 site-local block RFC 3879 deprecated; old
	// stacks still route it inside a site.
	siteLocal = netip.MustParsePrefix("fec0::/10")
	// nat64Local is RFC 8215's local-use NAT64 block. Operators carve
	// their own prefix of any length from it, so where the IPv4 address
	// sits is not known and the whole block is refused instead of
	// unwrapped.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
)

// classify reports whether addr (unmapped, no zone) is never safe to reach
// without an exact allow rule, and which kind it is.
func classify(addr netip.Addr) (unsafeClass, bool) {
	if addr.Is4() {
		b := addr.As4()
		switch {
		case addr == broadcast:
			return classBroadcast, true
		case addr.IsUnspecified():
			return classUnspecified, true
		case b[0] == 0:
			return classThisNetwork, true
		case addr == metadataV4:
			return classMetadata4, true
		case addr == alibabaMetadata:
			return classAlibaba, true
		case addr == wireServer:
			return classWireServer, true
		}
	} else {
		switch {
		case addr == metadataV6:
			return classMetadata6, true
		case siteLocal.Contains(addr):
			return classSiteLocal, true
		case nat64Local.Contains(addr):
			return classNAT64Local, true
		}
	}
	switch {
	case addr.IsLoopback():
		return classLoopback, true
	case addr.IsUnspecified():
		return classUnspecified, true
	case addr.IsLinkLocalUnicast():
		return classLinkLocal, true
	case addr.IsMulticast():
		return classMulticast, true
	}
	return unsafeClass{}, false
}

// embedding names how an IPv4 address travels inside an IPv6 one.
type embedding string

const (
	embedMapped     embedding = "IPv4-mapped"
	embedTranslated embedding = "IPv4-translated"
	embedCompatible embedding = "IPv4-compatible"
	embedNAT64      embedding = "NAT64"
	embed6to4       embedding = "6to4"
	embedTeredo     embedding = "Teredo"
)

// form is one reading of a target address that must pass the deny rules and
// the always-blocked set.
type form struct {
	addr netip.Addr
	via  embedding // empty for the address itself
}

// forms returns the address the caller dials (IPv4-mapped addresses unmapped,
// marked as such) and, for IPv6 addresses that carry an IPv4 address, that
// IPv4 address too. For an IPv4-mapped address the second form is the IPv6
// spelling itself, so IPv6 deny rules still see it.
func forms(addr netip.Addr) (primary form, extra form, ok bool) {
	addr = addr.WithZone("")
	if addr.Is4In6() {
		return form{addr: addr.Unmap(), via: embedMapped}, form{addr: addr}, true
	}
	primary = form{addr: addr}
	if !addr.Is6() {
		return primary, form{}, false
	}
	b := addr.As16()
	var v4 [4]byte
	switch {
	case b[0] == 0x20 && b[1] == 0x02: // 2002::/16, IPv4 in bits 16-47
		copy(v4[:], b[2:6])
		extra.via = embed6to4
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0: // 2001::/32
		for i := range v4 {
			v4[i] = b[12+i] ^ 0xff
		}
		extra.via = embedTeredo
	case isZero(b[:8]) && b[8] == 0xff && b[9] == 0xff && isZero(b[10:12]): // ::ffff:0:0:0/96 (SIIT)
		copy(v4[:], b[12:])
		extra.via = embedTranslated
	case isZero(b[:12]):
		copy(v4[:], b[12:])
		extra.via = embedCompatible
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]): // 64:ff9b::/96
		copy(v4[:], b[12:])
		extra.via = embedNAT64
	default:
		return primary, form{}, false
	}
	extra.addr = netip.AddrFrom4(v4)
	return primary, extra, true
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
