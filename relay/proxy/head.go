package proxy

import (
	"bytes"
)

// connectHead is what the front reads of a CONNECT: its target as the
// client wrote it and its Proxy-Authorization.
type connectHead struct {
	target string
	authz  string
	size   int // bytes of the head, its blank line included
}

// headVerdict is what the front makes of the bytes it has read so far.
type headVerdict int

const (
	// headMore: a CONNECT whose head is not complete yet.
	headMore headVerdict = iota
	// headConnect: a whole CONNECT head the front serves itself.
	headConnect
	// headOther: anything else, which net/http serves as it always has:
	// another method, or a CONNECT written in any way the front does
	// not read exactly (a version other than HTTP/1.0 or 1.1, a repeated
	// or folded field, a body, bytes no field may hold).
	headOther
)

var connectPrefix = []byte("CONNECT ")

// parseHead reads the start of a connection. It is strict on purpose:
// what it does not take goes to net/http, which answers it as before, so
// reading less here never changes an answer; only a well-formed CONNECT
// takes the short way.
func parseHead(b []byte) (connectHead, headVerdict) {
	if !bytes.HasPrefix(b, connectPrefix[:min(len(b), len(connectPrefix))]) {
		return connectHead{}, headOther
	}
	line, rest, ok := cutLine(b)
	if !ok {
		return connectHead{}, headMore
	}
	var h connectHead
	if h.target, ok = requestTarget(line); !ok {
		return connectHead{}, headOther
	}
	var sawAuthz, sawHost bool // each allowed once
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return connectHead{}, headMore
		}
		if len(line) == 0 {
			h.size = len(b) - len(rest)
			return h, headConnect
		}
		name, value, ok := field(line)
		if !ok {
			return connectHead{}, headOther
		}
		// field took only token bytes, so Unicode folding is ASCII's here.
		switch {
		case bytes.EqualFold(name, []byte("Proxy-Authorization")):
			if sawAuthz {
				return connectHead{}, headOther
			}
			sawAuthz, h.authz = true, string(value)
		case bytes.EqualFold(name, []byte("Host")):
			if sawHost || !plainHost(value) {
				return connectHead{}, headOther
			}
			sawHost = true
		case bytes.EqualFold(name, []byte("Content-Length")), bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return connectHead{}, headOther
		}
	}
}

// cutLine cuts one line off b: up to LF, without it and a CR before it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	return bytes.TrimSuffix(b[:i], []byte("\r")), b[i+1:], true
}

// requestTarget returns the target of "CONNECT <target> HTTP/1.x", with
// single spaces between the three.
func requestTarget(line []byte) (string, bool) {
	rest := line[len(connectPrefix):]
	i := bytes.IndexByte(rest, ' ')
	if i <= 0 {
		return "", false
	}
	target, version := rest[:i], rest[i+1:]
	if string(version) != "HTTP/1.1" && string(version) != "HTTP/1.0" {
		return "", false
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return "", false
		}
	}
	return string(target), true
}

// field splits "Name: value" into a token name and the value without the
// spaces around it; a value may hold any byte but controls other than
// tab.
func field(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	name = line[:i]
	for _, c := range name {
		if !tokenChar(c) {
			return nil, nil, false
		}
	}
	value = bytes.Trim(line[i+1:], " \t")
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// plainHost reports whether a Host field holds only what a host, a port
// and an IPv6 address's brackets are written with; net/http refuses some
// other values, and the front leaves those to it.
func plainHost(v []byte) bool {
	for _, c := range v {
		if !hostChar(rune(c)) && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// tokenChar reports whether c may appear in a field name (RFC 9110
// section 5.6.2).
func tokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
