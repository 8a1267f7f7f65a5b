package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseHead(t *testing.T) {
	const auth = "Basic Y29ubl8xOnBha194"
	tests := map[string]struct {
		head    string
		verdict headVerdict
		target  string
		authz   string
	}{
		"product's CONNECT": {"CONNECT jira.corp:443 HTTP/1.1\r\nHost: jira.corp:443\r\nProxy-Authorization: " + auth + "\r\n\r\n",
			headConnect, "jira.corp:443", auth},
		"no credentials":  {"CONNECT jira.corp:443 HTTP/1.1\r\n\r\n", headConnect, "jira.corp:443", ""},
		"HTTP/1.0":        {"CONNECT 10.0.0.7:22 HTTP/1.0\r\n\r\n", headConnect, "10.0.0.7:22", ""},
		"bare LF":         {"CONNECT h:1 HTTP/1.1\nproxy-authorization:  " + auth + " \n\n", headConnect, "h:1", auth},
		"IPv6 target":     {"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", headConnect, "[::1]:443", ""},
		"bad target read": {"CONNECT user@h:1 HTTP/1.1\r\n\r\n", headConnect, "user@h:1", ""}, // refused BAD_TARGET by the caller
		"first bytes":     {"CONN", headMore, "", ""},
		"line not ended":  {"CONNECT h:1 HTTP/1.1\r\nHost: h", headMore, "", ""},
		"no blank line":   {"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n", headMore, "", ""},
		"GET":             {"GET http://h/ HTTP/1.1\r\n\r\n", headOther, "", ""},
		"lower-case verb": {"connect h:1 HTTP/1.1\r\n\r\n", headOther, "", ""},
		"HTTP/2 preface":  {"PRI * HTTP/2.0\r\n\r\n", headOther, "", ""},
		"TLS by mistake":  {"\x16\x03\x01\x02\x00\x01", headOther, "", ""},
		"HTTP/1.2":        {"CONNECT h:1 HTTP/1.2\r\n\r\n", headOther, "", ""},
		"no version":      {"CONNECT h:1\r\n\r\n", headOther, "", ""},
		"two spaces":      {"CONNECT  h:1 HTTP/1.1\r\n\r\n", headOther, "", ""},
		"folded field":    {"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Basic\r\n x\r\n\r\n", headOther, "", ""},
		"credentials twice": {"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: " + auth + "\r\nProxy-Authorization: " + auth + "\r\n\r\n",
			headOther, "", ""},
		"two hosts":          {"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\nHost: h:1\r\n\r\n", headOther, "", ""},
		"odd host":           {"CONNECT h:1 HTTP/1.1\r\nHost: h\"1\r\n\r\n", headOther, "", ""},
		"a body":             {"CONNECT h:1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n", headOther, "", ""},
		"chunked":            {"CONNECT h:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", headOther, "", ""},
		"space before colon": {"CONNECT h:1 HTTP/1.1\r\nHost : h:1\r\n\r\n", headOther, "", ""},
		"control in value":   {"CONNECT h:1 HTTP/1.1\r\nX: a\x00b\r\n\r\n", headOther, "", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h, v := parseHead([]byte(tc.head))
			assert.Equal(t, tc.verdict, v)
			assert.Equal(t, tc.target, h.target)
			assert.Equal(t, tc.authz, h.authz)
			if v == headConnect {
				assert.Equal(t, len(tc.head), h.size)
			}
		})
	}
}

func TestParseHeadLeavesEarlyBytes(t *testing.T) {
	head := "CONNECT h:443 HTTP/1.1\r\n\r\n"
	h, v := parseHead([]byte(head + "\x16\x03\x01 client hello"))
	assert.Equal(t, headConnect, v)
	assert.Equal(t, len(head), h.size, "the bytes behind the head go to the stream")
}

// A CONNECT the front takes is one net/http reads the same way: same
// method, target and credentials, and a head of the same length; or one
// whose target both ways refuse BAD_TARGET (CheckTarget here, CheckLines
// before net/http). What the front does not take goes to net/http, so it
// may be stricter, never looser.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"CONNECT jira.corp:443 HTTP/1.1\r\nHost: jira.corp:443\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
		"CONNECT h:1 HTTP/1.0\n\n", "CONNECT [::1]:443 HTTP/1.1\r\nX-A: b\tc\r\n\r\nearly",
		"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Basic\r\n x\r\n\r\n",
		"CONNECT h:1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "GET / HTTP/1.1\r\n\r\n",
		"CONNECT h:1 HTTP/1.1\r\nHost: h\"1\r\n\r\n", "CONNECT a@b:1 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, v := parseHead(b)
		if v != headConnect {
			if h != (connectHead{}) {
				t.Fatalf("parseHead(%q) = %+v with verdict %d", b, h, v)
			}
			return
		}
		br := bufio.NewReader(bytes.NewReader(b))
		r, err := http.ReadRequest(br)
		if err != nil {
			if CheckTarget(h.target) == nil {
				t.Fatalf("the front takes %q; net/http refuses it: %v", b, err)
			}
			return
		}
		read := len(b) - br.Buffered()
		switch {
		case r.Method != http.MethodConnect:
			t.Fatalf("%q: net/http reads %s", b, r.Method)
		case r.RequestURI != h.target:
			t.Fatalf("%q: target %q, net/http reads %q", b, h.target, r.RequestURI)
		case r.Header.Get("Proxy-Authorization") != h.authz:
			t.Fatalf("%q: credentials %q, net/http reads %q", b, h.authz, r.Header.Get("Proxy-Authorization"))
		case read != h.size:
			t.Fatalf("%q: head of %d bytes, net/http reads %d", b, h.size, read)
		}
	})
}
