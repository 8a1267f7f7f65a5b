package allowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadTarget reports a requested host or port that is malformed or
// ambiguous. Errors from NormalizeHost wrap it.
var ErrBadTarget = errors.New("bad target")

// maxHostInput bounds the raw host text before any parsing, so IDNA work on
// hostile input stays small. A valid name is at most 253 bytes once encoded;
// Unicode input may be a few times longer.
const maxHostInput = 1024

// idnaProfile maps Unicode names to punycode the way a lookup would (UTS #46
// non-transitional, STD3 characters only, bidi rule). The hyphen-position
// check is left to validateLDH, which accepts names like "r3---sn.example"
// that exist in practice. The profile is immutable.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.CheckHyphens(false),
	idna.VerifyDNSLength(true),
)

// Target is a requested host after normalization. Exactly one field is set:
// Name for DNS names (punycode, lower case, no trailing dot) and Addr for IP
// literals.
type Target struct {
	Name string
	Addr netip.Addr
}

// IsAddr reports whether the target is an IP literal.
func (t Target) IsAddr() bool { return t.Addr.IsValid() }

// String returns the name, or the address in canonical form.
func (t Target) String() string {
	if t.Addr.IsValid() {
		return t.Addr.String()
	}
	return t.Name
}

// NormalizeHost is the one normalization of a requested host. It returns the
// name in lower-case punycode without a trailing dot, or the address of an IP
// literal. IPv4 must be canonical dotted-quad; IPv6 may be bracketed.
// Anything else that looks like an address, and anything a resolver might
// read differently than this package does, is refused with an error wrapping
// ErrBadTarget.
func NormalizeHost(host string) (Target, error) {
	if host == "" {
		return Target{}, badTarget(host, "the host is empty")
	}
	if len(host) > maxHostInput {
		return Target{}, fmt.Errorf("%w: host of %d bytes is too long", ErrBadTarget, len(host))
	}
	if host[0] == '[' {
		if host[len(host)-1] != ']' {
			if strings.Contains(host, "]:") {
				return Target{}, badTarget(host, "the host must not carry a port")
			}
			return Target{}, badTarget(host, "unbalanced bracket")
		}
		addr, err := parseIPv6Literal(host, host[1:len(host)-1])
		if err != nil {
			return Target{}, err
		}
		return Target{Addr: addr}, nil
	}
	if strings.IndexByte(host, ':') >= 0 {
		addr, err := parseIPv6Literal(host, host)
		if err != nil {
			return Target{}, err
		}
		return Target{Addr: addr}, nil
	}
	if digitsAndDots(host) {
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is4() {
			return Target{}, badTarget(host, "an IPv4 address must be four decimal octets 0-255 without leading zeros")
		}
		return Target{Addr: addr}, nil
	}
	name, err := normalizeName(host)
	if err != nil {
		return Target{}, fmt.Errorf("%w: host %q: %s", ErrBadTarget, host, err.Error())
	}
	return Target{Name: name}, nil
}

func badTarget(host, why string) error {
	return fmt.Errorf("%w: host %q: %s", ErrBadTarget, host, why)
}

// parseIPv6Literal parses the inside of an IPv6 literal. raw is the host as
// received, for messages.
func parseIPv6Literal(raw, s string) (netip.Addr, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, badTarget(raw, "IPv6 zone ids are not accepted")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		if strings.Count(s, ":") == 1 {
			return netip.Addr{}, badTarget(raw, "the host must not carry a port")
		}
		return netip.Addr{}, badTarget(raw, "not a valid IPv6 address")
	}
	if !addr.Is6() {
		return netip.Addr{}, badTarget(raw, "brackets are only for IPv6 addresses")
	}
	return addr, nil
}

func digitsAndDots(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// normalizeName turns a DNS name into lower-case punycode without a trailing
// dot, or says why it is not a valid host name. It allocates only when the
// name needs changing (upper case, Unicode, punycode to verify).
func normalizeName(in string) (string, error) {
	s := strings.TrimSuffix(in, ".")
	if s == "" {
		return "", errors.New("the name is empty")
	}
	ascii, upper := true, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80:
			ascii = false
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
		case c == '@':
			return "", errors.New("userinfo is not accepted")
		case c == ':':
			return "", errors.New("the host must not carry a port")
		default:
			return "", fmt.Errorf("character %q is not allowed in a host name", c)
		}
	}
	if upper {
		s = strings.ToLower(s)
	}
	if !ascii && !utf8.ValidString(s) {
		return "", errors.New("the name is not valid UTF-8")
	}
	if !ascii || hasACELabel(s) {
		out, err := idnaProfile.ToASCII(s)
		if err != nil {
			return "", fmt.Errorf("not a valid internationalized name: %w", err)
		}
		// A trailing full stop in another script ("example。") maps to a
		// trailing dot, which is ignored like an ASCII one. A dot that was
		// already there is a second one and fails below as an empty label.
		if !strings.HasSuffix(s, ".") {
			out = strings.TrimSuffix(out, ".")
		}
		s = out
	}
	if err := validateLDH(s); err != nil {
		return "", err
	}
	return s, nil
}

// hasACELabel reports whether any label starts with the punycode prefix; such
// labels go through IDNA so that invalid punycode is refused.
func hasACELabel(s string) bool {
	for {
		if strings.HasPrefix(s, "xn--") {
			return true
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return false
		}
		s = s[i+1:]
	}
}

// validateLDH checks a lower-case ASCII name: letters, digits and hyphens,
// labels of 1-63 bytes not starting or ending with a hyphen, at most 253
// bytes in all, and a last label that is not numeric (which resolvers would
// read as an IPv4 address).
func validateLDH(s string) error {
	if len(s) > 253 {
		return fmt.Errorf("the name is %d bytes long; the limit is 253", len(s))
	}
	start, last := 0, ""
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return fmt.Errorf("character %q is not allowed in a host name", c)
			}
			continue
		}
		label := s[start:i]
		switch {
		case label == "":
			return errors.New("the name has an empty label")
		case len(label) > 63:
			return fmt.Errorf("label %q is longer than 63 bytes", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		start, last = i+1, label
	}
	if numericLabel(last) {
		return errors.New("it looks like a numeric IP address form; write IPv4 as four decimal octets")
	}
	return nil
}

// numericLabel reports whether a label would be read as a number by an IPv4
// parser: all decimal digits, or "0x" followed by hex digits.
func numericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			c := l[i]
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
				return false
			}
		}
		return true
	}
	return l != "" && digitsAndDots(l)
}
