// Package proxyproto reads the PROXY protocol header (version 1, text, and
// version 2, binary) that a load balancer writes before a connection's
// first byte, so that the relay's limits and logs see the client's address
// instead of the balancer's. Headers are honoured only on connections from
// the trusted addresses a Listener is given, and required on them; every
// other connection is passed through untouched.
//
// It knows nothing of HTTP or TLS: the header comes before either.
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Header is what a PROXY header says about a connection.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is true when the header names no client: version 1
	// "UNKNOWN", version 2 LOCAL (a balancer's own health check), or a
	// version 2 address family other than TCP over IPv4 or IPv6. The
	// connection's own addresses stand.
	Local bool
	// Source is the client's address and port; Destination is the
	// address the client connected to. Both are zero when Local.
	Source, Destination netip.AddrPort
}

var (
	// ErrNoHeader means the connection does not start with a PROXY
	// header of either version.
	ErrNoHeader = errors.New("no PROXY protocol header")
	// ErrInvalid means the connection starts like a PROXY header but the
	// header is malformed.
	ErrInvalid = errors.New("invalid PROXY protocol header")
)

// Limits of the wire format.
const (
	// maxV1Len is the longest version 1 line, CRLF included (the
	// specification's own bound).
	maxV1Len = 107
	// MaxV2Body bounds the addresses and TLVs of a version 2 header.
	// Balancers send a few dozen bytes of TLVs; the format allows 64 KiB,
	// which is refused rather than read.
	MaxV2Body = 2048
	// v2HeaderLen is the fixed part of a version 2 header.
	v2HeaderLen = 16
)

// v2Signature starts every version 2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Read reads one PROXY header from r and consumes exactly its bytes; what
// follows stays in r. It decides from the first byte: a connection that
// starts with neither header is ErrNoHeader without waiting for more.
func Read(r *bufio.Reader) (Header, error) {
	first, err := r.Peek(1)
	if err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrNoHeader, err)
	}
	switch first[0] {
	case 'P':
		return readV1(r)
	case '\r':
		return readV2(r)
	}
	return Header{}, ErrNoHeader
}

// signature checks that r starts with sig: ErrNoHeader when it does not,
// ErrInvalid when the connection ends (or times out) partway through it.
func signature(r *bufio.Reader, sig []byte, version int) error {
	got, err := r.Peek(len(sig))
	if !bytes.HasPrefix(sig, got) {
		return ErrNoHeader
	}
	if err != nil {
		return invalid("version %d signature ends early: %v", version, err)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// readV1 reads "PROXY TCP4|TCP6|UNKNOWN ...\r\n".
func readV1(r *bufio.Reader) (Header, error) {
	if err := signature(r, []byte("PROXY "), 1); err != nil {
		return Header{}, err
	}
	line := make([]byte, 0, maxV1Len)
	for len(line) < maxV1Len {
		b, err := r.ReadByte()
		if err != nil {
			return Header{}, invalid("version 1 line ends early: %v", err)
		}
		line = append(line, b)
		if b == '\n' {
			return parseV1(line)
		}
	}
	return Header{}, invalid("version 1 line longer than %d bytes", maxV1Len)
}

// parseV1 parses one complete version 1 line, CRLF included.
func parseV1(line []byte) (Header, error) {
	text, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return Header{}, invalid("version 1 line does not end in CRLF")
	}
	fields := strings.Split(text, " ")
	h := Header{Version: 1}
	if len(fields) >= 2 && fields[1] == "UNKNOWN" {
		h.Local = true
		return h, nil
	}
	if len(fields) != 6 {
		return Header{}, invalid("version 1 wants PROXY, protocol, two addresses and two ports")
	}
	want4 := fields[1] == "TCP4"
	if !want4 && fields[1] != "TCP6" {
		return Header{}, invalid("version 1 protocol %q: want TCP4, TCP6 or UNKNOWN", clip(fields[1]))
	}
	var addrs [2]netip.AddrPort
	for i := range addrs {
		a, err := parseV1Addr(fields[2+i], want4)
		if err != nil {
			return Header{}, err
		}
		port, err := parseV1Port(fields[4+i])
		if err != nil {
			return Header{}, err
		}
		addrs[i] = netip.AddrPortFrom(a, port)
	}
	h.Source, h.Destination = addrs[0], addrs[1]
	return h, nil
}

func parseV1Addr(s string, want4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4() != want4 {
		return netip.Addr{}, invalid("version 1 address %q does not match its protocol", clip(s))
	}
	return a, nil
}

// parseV1Port takes a decimal port without sign or leading zeros.
func parseV1Port(s string) (uint16, error) {
	bad := invalid("version 1 port %q: want 0-65535", clip(s))
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, bad
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, bad
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, bad
	}
	return uint16(n), nil
}

// clip keeps an error message short whatever a peer sent.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Version 2 commands, address families and transports (0 is UNSPEC for
// both).
const (
	cmdLocal = 0x0
	cmdProxy = 0x1

	afInet  = 0x1
	afInet6 = 0x2
	afUnix  = 0x3

	transportStream = 0x1
	transportDgram  = 0x2
)

// readV2 reads the binary header: signature, version and command, family
// and transport, body length, then the body (addresses and TLVs).
func readV2(r *bufio.Reader) (Header, error) {
	if err := signature(r, v2Signature, 2); err != nil {
		return Header{}, err
	}
	fixed, err := r.Peek(v2HeaderLen)
	if err != nil {
		return Header{}, invalid("version 2 header ends early: %v", err)
	}
	verCmd, fam := fixed[12], fixed[13]
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if verCmd>>4 != 2 {
		return Header{}, invalid("version 2 signature with version %d", verCmd>>4)
	}
	if n > MaxV2Body {
		return Header{}, invalid("version 2 body of %d bytes, more than %d", n, MaxV2Body)
	}
	if _, err := r.Discard(v2HeaderLen); err != nil {
		return Header{}, invalid("version 2 header: %v", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, invalid("version 2 body ends early: %v", err)
	}
	return parseV2(verCmd&0x0f, fam, body)
}

// parseV2 reads the addresses of a version 2 body; TLVs after them are
// ignored.
func parseV2(cmd, fam byte, body []byte) (Header, error) {
	h := Header{Version: 2}
	switch cmd {
	case cmdLocal: // the balancer's own connection; the family is to be ignored
		h.Local = true
		return h, nil
	case cmdProxy:
	default:
		return Header{}, invalid("version 2 command %d", cmd)
	}
	af, transport := fam>>4, fam&0x0f
	if af > afUnix || transport > transportDgram {
		return Header{}, invalid("version 2 family byte %#02x", fam)
	}
	if transport != transportStream || (af != afInet && af != afInet6) {
		// UNSPEC, UNIX or datagram: no client address to use.
		h.Local = true
		return h, nil
	}
	size := 4
	if af == afInet6 {
		size = 16
	}
	if len(body) < 2*size+4 {
		return Header{}, invalid("version 2 body of %d bytes is too short for its addresses", len(body))
	}
	src, _ := netip.AddrFromSlice(body[:size])
	dst, _ := netip.AddrFromSlice(body[size : 2*size])
	sport := binary.BigEndian.Uint16(body[2*size:])
	dport := binary.BigEndian.Uint16(body[2*size+2:])
	h.Source, h.Destination = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return h, nil
}

// AppendV1 appends the version 1 line for a TCP connection from src to
// dst, as a load balancer writes it.
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	proto := "TCP6"
	if src.Addr().Is4() {
		proto = "TCP4"
	}
	return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", proto, src.Addr(), dst.Addr(), src.Port(), dst.Port())
}

// AppendV2 appends the version 2 PROXY header for a TCP connection from
// src to dst, followed by tlvs (already encoded, may be nil).
func AppendV2(b []byte, src, dst netip.AddrPort, tlvs []byte) []byte {
	fam := byte(afInet<<4 | transportStream)
	s, d := src.Addr().Unmap().AsSlice(), dst.Addr().Unmap().AsSlice()
	if len(s) == 16 || len(d) == 16 {
		fam = afInet6<<4 | transportStream
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		s, d = s16[:], d16[:]
	}
	body := append(append(s, d...), 0, 0, 0, 0)
	binary.BigEndian.PutUint16(body[len(body)-4:], src.Port())
	binary.BigEndian.PutUint16(body[len(body)-2:], dst.Port())
	body = append(body, tlvs...)
	b = append(b, v2Signature...)
	b = append(b, 2<<4|cmdProxy, fam, 0, 0)
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(len(body)))
	return append(b, body...)
}
