package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// v2Hex is a version 2 header written out byte by byte, so the parser is
// held to the specification, not to this package's own encoder.
func v2Hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	require.NoError(t, err)
	return b
}

const sigHex = "0d0a0d0a000d0a515549540a"

func TestReadHeader(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := map[string]struct {
		in   []byte
		want Header
	}{
		"v1 tcp4": {[]byte("PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"),
			Header{Version: 1, Source: ap("203.0.113.7:51234"), Destination: ap("192.0.2.1:443")}},
		"v1 tcp6": {[]byte("PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n"),
			Header{Version: 1, Source: ap("[2001:db8::7]:65535"), Destination: ap("[2001:db8::1]:0")}},
		"v1 unknown":              {[]byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
		"v1 unknown with fields":  {[]byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Header{Version: 1, Local: true}},
		"v1 longest line allowed": {[]byte("PROXY UNKNOWN " + strings.Repeat("x", maxV1Len-16) + "\r\n"), Header{Version: 1, Local: true}},
		"v2 tcp4": {v2Hex(t, sigHex+"21 11 000c cb007107 c0000201 c822 01bb"),
			Header{Version: 2, Source: ap("203.0.113.7:51234"), Destination: ap("192.0.2.1:443")}},
		"v2 tcp4 with tlvs": {v2Hex(t, sigHex+"21 11 0013 cb007107 c0000201 c822 01bb 04 0004 00000000"),
			Header{Version: 2, Source: ap("203.0.113.7:51234"), Destination: ap("192.0.2.1:443")}},
		"v2 tcp6": {v2Hex(t, sigHex+"21 21 0024 20010db8000000000000000000000007 20010db8000000000000000000000001 0050 01bb"),
			Header{Version: 2, Source: ap("[2001:db8::7]:80"), Destination: ap("[2001:db8::1]:443")}},
		"v2 local (health check)":  {v2Hex(t, sigHex+"20 00 0000"), Header{Version: 2, Local: true}},
		"v2 local ignores family":  {v2Hex(t, sigHex+"20 ff 0002 abcd"), Header{Version: 2, Local: true}},
		"v2 proxy unspec":          {v2Hex(t, sigHex+"21 00 0000"), Header{Version: 2, Local: true}},
		"v2 proxy udp4":            {v2Hex(t, sigHex+"21 12 000c cb007107 c0000201 c822 01bb"), Header{Version: 2, Local: true}},
		"v2 proxy unix":            {v2Hex(t, sigHex+"21 31 0000"), Header{Version: 2, Local: true}},
		"v2 longest body accepted": {append(v2Hex(t, sigHex+"21 00 0800"), make([]byte, MaxV2Body)...), Header{Version: 2, Local: true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			const after = "GET / HTTP/1.1\r\n"
			r := bufio.NewReaderSize(bytes.NewReader(append(tc.in, after...)), bufSize)
			got, err := Read(r)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			rest, _ := io.ReadAll(r)
			assert.Equal(t, after, string(rest), "exactly the header is consumed")
		})
	}
}

func TestReadHeaderRefusals(t *testing.T) {
	tests := map[string]struct {
		in   []byte
		want error
	}{
		"plain http":                 {[]byte("GET / HTTP/1.1\r\n\r\n"), ErrNoHeader},
		"tls client hello":           {[]byte{0x16, 0x03, 0x01, 0x02, 0x00}, ErrNoHeader},
		"empty":                      {nil, ErrNoHeader},
		"P but not PROXY":            {[]byte("POST / HTTP/1.1\r\n\r\n"), ErrNoHeader},
		"CR but not the signature":   {[]byte("\r\n\r\nhello there, friend"), ErrNoHeader},
		"v1 lowercase":               {[]byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrNoHeader},
		"v1 without CRLF":            {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ErrInvalid},
		"v1 cut short":               {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1"), ErrInvalid},
		"v1 too long":                {[]byte("PROXY UNKNOWN " + strings.Repeat("x", maxV1Len) + "\r\n"), ErrInvalid},
		"v1 tcp4 with ipv6":          {[]byte("PROXY TCP4 ::1 ::2 1 2\r\n"), ErrInvalid},
		"v1 tcp6 with ipv4":          {[]byte("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), ErrInvalid},
		"v1 zone":                    {[]byte("PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n"), ErrInvalid},
		"v1 port too big":            {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), ErrInvalid},
		"v1 port with leading zero":  {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), ErrInvalid},
		"v1 port with sign":          {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n"), ErrInvalid},
		"v1 two spaces":              {[]byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), ErrInvalid},
		"v1 missing port":            {[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), ErrInvalid},
		"v1 other protocol":          {[]byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), ErrInvalid},
		"v1 octal-looking address":   {[]byte("PROXY TCP4 010.0.0.1 5.6.7.8 1 2\r\n"), ErrInvalid},
		"v2 version 1 in the byte":   {v2Hex(t, sigHex+"11 11 000c cb007107 c0000201 c822 01bb"), ErrInvalid},
		"v2 unknown command":         {v2Hex(t, sigHex+"22 11 000c cb007107 c0000201 c822 01bb"), ErrInvalid},
		"v2 bad family":              {v2Hex(t, sigHex+"21 41 0000"), ErrInvalid},
		"v2 bad transport":           {v2Hex(t, sigHex+"21 13 0000"), ErrInvalid},
		"v2 body shorter than addrs": {v2Hex(t, sigHex+"21 11 0008 cb007107 c0000201"), ErrInvalid},
		"v2 tcp6 body too short":     {v2Hex(t, sigHex+"21 21 000c cb007107 c0000201 c822 01bb"), ErrInvalid},
		"v2 body cut short":          {v2Hex(t, sigHex+"21 11 000c cb007107"), ErrInvalid},
		"v2 body over the cap":       {v2Hex(t, sigHex+"21 11 0801"), ErrInvalid},
		"v2 body of 64 KiB":          {v2Hex(t, sigHex+"21 11 ffff"), ErrInvalid},
		"v2 fixed part cut short":    {v2Hex(t, sigHex+"21"), ErrInvalid},
		"v2 signature cut short":     {v2Hex(t, "0d0a0d0a00"), ErrInvalid},
		"v1 signature cut short":     {[]byte("PROX"), ErrInvalid},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Read(bufio.NewReaderSize(bytes.NewReader(tc.in), bufSize))
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			assert.Less(t, len(err.Error()), 200, "an error never repeats much of what the peer sent")
		})
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, pair := range [][2]string{
		{"203.0.113.7:51234", "192.0.2.1:443"},
		{"[2001:db8::7]:1", "[2001:db8::1]:65535"},
	} {
		src, dst := netip.MustParseAddrPort(pair[0]), netip.MustParseAddrPort(pair[1])
		for name, b := range map[string][]byte{"v1": AppendV1(nil, src, dst), "v2": AppendV2(nil, src, dst, []byte{4, 0, 1, 9})} {
			h, err := Read(bufio.NewReaderSize(bytes.NewReader(b), bufSize))
			require.NoError(t, err, "%s %s", name, pair)
			assert.Equal(t, src, h.Source, name)
			assert.Equal(t, dst, h.Destination, name)
		}
	}
}

// FuzzReadHeader holds the parser to its promises on any input: it never
// panics, never reads past MaxV2Body plus the fixed part, consumes nothing
// after the header, and a header it accepts names a usable client or
// none.
func FuzzReadHeader(f *testing.F) {
	seeds := [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"),
		[]byte("PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\nGET /"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
		[]byte("GET / HTTP/1.1\r\n"),
		AppendV2(nil, netip.MustParseAddrPort("203.0.113.7:1"), netip.MustParseAddrPort("192.0.2.1:2"), nil),
		AppendV2(nil, netip.MustParseAddrPort("[2001:db8::7]:1"), netip.MustParseAddrPort("[2001:db8::1]:2"), []byte{1, 0, 2, 'h', '2'}),
		append(bytes.Clone(v2Signature), 0x20, 0, 0, 0),
		{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n', 0x21, 0x11, 0xff, 0xff},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := append(bytes.Clone(in), "\x00after"...)
		src := bytes.NewReader(whole)
		r := bufio.NewReaderSize(src, bufSize)
		h, err := Read(r)
		if err != nil {
			if !errors.Is(err, ErrNoHeader) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is neither ErrNoHeader nor ErrInvalid", err)
			}
			return
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
		if !h.Local && (!h.Source.IsValid() || !h.Destination.IsValid() || h.Source.Addr().Zone() != "") {
			t.Fatalf("accepted header without usable addresses: %+v", h)
		}
		consumed := len(whole) - src.Len() - r.Buffered()
		if consumed > v2HeaderLen+MaxV2Body || (h.Version == 1 && consumed > maxV1Len) {
			t.Fatalf("a header of %d bytes", consumed)
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(rest, whole[consumed:]) {
			t.Fatalf("the bytes after the header were eaten: %q", rest)
		}
	})
}
